/*
 * fuzz_dns.c - dns_parse_mx on arbitrary bytes.
 *
 * The input is the DNS answer packet as is. It is parsed with a few values
 * of max (1, 3, 16) and the results are checked for what the flusher relies
 * on: a return code from dns.h's list only, *n <= max, *n == 0 on error,
 * hosts sorted by preference, each name non-empty, NUL-terminated, lower
 * case, made only of letters, digits, '-', '_' and single dots, and the best
 * hosts of a larger max start with those of a smaller one.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
fuzz_check_hosts(const struct dns_host *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strnlen(h[i].name, sizeof(h[i].name));
        if (len == 0 || len >= sizeof(h[i].name) || len > 253)
            abort();
        for (size_t j = 0; j < len; j++) {
            char c = h[i].name[j];
            int ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
                     (c == '.' && j > 0 && j + 1 < len && h[i].name[j + 1] != '.');
            if (!ok)
                abort();
        }
        if (i > 0 && h[i - 1].pref > h[i].pref)
            abort();
        if (h[i].pref > 65535)
            abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t maxes[] = {1, 3, 16};
    struct dns_host hosts[3][16];
    size_t got[3];
    int rcs[3];

    if (size > 65536)
        return 0;
    for (size_t k = 0; k < 3; k++) {
        size_t n = 12345;
        int rc = dns_parse_mx(data, (int)size, hosts[k], maxes[k], &n);
        if (rc != 0 && rc != DNS_E_NULL_MX && rc != MX2_E_NOT_FOUND && rc != -EAGAIN &&
            rc != MX2_E_PROTOCOL)
            abort();
        if (n > maxes[k] || (rc != 0 && n != 0))
            abort();
        fuzz_check_hosts(hosts[k], n);
        got[k] = n;
        rcs[k] = rc;
    }
    /* max changes how many hosts are kept, never the verdict. */
    if (rcs[0] != rcs[1] || rcs[1] != rcs[2])
        abort();
    /* The lowest preference is the same whatever max is. */
    if (got[0] > 0 && (got[2] == 0 || hosts[0][0].pref != hosts[2][0].pref))
        abort();
    /* max = 3 keeps the three lowest preferences that max = 16 finds. */
    if (got[1] > got[2])
        abort();
    for (size_t i = 0; i < got[1]; i++)
        if (hosts[1][i].pref != hosts[2][i].pref)
            abort();
    return 0;
}
