/*
 * fuzz_addr.c - addr_parse_path / addr_relay_check / addr_format on
 * arbitrary bytes. The first byte selects the parse flags.
 *
 * Checked with abort(): a parsed path respects the RFC 5321 limits and its
 * own lengths; the relay verdict never admits a local part with a routing
 * character, an IP literal or a domain outside the list; the formatted
 * address fits ADDR_TEXT_MAX and parses back to the same local part and
 * domain (so what mx2 logs and forwards is what it judged).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "addr.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *domains[] = {"example.jp", "other.example."};
    struct addr_path a, b;
    char text[ADDR_TEXT_MAX], path[ADDR_TEXT_MAX + 2];
    size_t n, end;
    unsigned flags;
    int rc;

    if (size < 1)
        return 0;
    flags = data[0] & (ADDR_PARSE_NULL | ADDR_PARSE_UTF8 | ADDR_PARSE_BARE);
    data++;
    size--;

    (void)addr_path_end((const char *)data, size, &end);
    rc = addr_parse_path((const char *)data, size, flags, &a);
    if (rc != 0) {
        if (rc != MX2_E_BAD_ADDRESS)
            abort();
        return 0;
    }
    if (a.flags & ADDR_F_NULL) {
        if (!(flags & ADDR_PARSE_NULL) || a.local_len != 0 || a.domain_len != 0)
            abort();
        if (addr_relay_check(&a, domains, 2) != MX2_E_RELAY_DENIED)
            abort();
        return 0;
    }
    if (a.local_len == 0 || a.local_len > ADDR_LOCAL_MAX || strlen(a.local) != a.local_len ||
        a.domain_len == 0 || a.domain_len > ADDR_DOMAIN_MAX || strlen(a.domain) != a.domain_len)
        abort();
    if (a.domain[a.domain_len - 1] == '.')
        abort(); /* trailing dot must be gone */
    for (size_t i = 0; i < a.domain_len; i++)
        if (a.domain[i] >= 'A' && a.domain[i] <= 'Z')
            abort(); /* domain must be lower-cased */
    if (!(flags & ADDR_PARSE_UTF8)) {
        for (size_t i = 0; i < a.local_len; i++)
            if ((unsigned char)a.local[i] >= 0x80)
                abort();
        for (size_t i = 0; i < a.domain_len; i++)
            if ((unsigned char)a.domain[i] >= 0x80)
                abort();
    }

    if (addr_relay_check(&a, domains, 2) == 0) {
        if (strpbrk(a.local, "%!@:,") != NULL || a.domain[0] == '[' ||
            (strcasecmp(a.domain, "example.jp") != 0 && strcasecmp(a.domain, "other.example") != 0))
            abort(); /* open relay */
    }

    if (addr_format(&a, text, sizeof(text), &n) != 0 || n != strlen(text))
        abort();
    snprintf(path, sizeof(path), "<%s>", text);
    if (addr_parse_path(path, strlen(path), flags | ADDR_PARSE_UTF8, &b) != 0)
        abort(); /* formatted address does not parse back */
    if (b.local_len != a.local_len || memcmp(b.local, a.local, a.local_len) != 0 ||
        strcmp(b.domain, a.domain) != 0)
        abort();
    return 0;
}
