/*
 * fuzz_config.c - libFuzzer target for the mx2.conf loader.
 *
 * Each input goes, as a NUL-terminated copy, to both pure value parsers
 * (config_parse_duration, config_parse_hostport with and without a default
 * port, and back through config_format_hostport), and, when under 4 KiB, to
 * config_load_string() as a whole config, followed by config_check_daemon().
 * Everything is freed, so LeakSanitizer checks the error paths too.
 * config_load_string refuses @include, so no input makes the loader read
 * other files.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    int64_t secs;
    struct mx2_hostport hp;
    char buf[300];

    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';

    if (config_parse_duration(s, &secs) == 0 && (secs < 0 || secs > CONFIG_DURATION_MAX))
        abort();
    for (int i = 0; i < 2; i++) {
        if (config_parse_hostport(s, i == 0 ? 25 : 0, &hp) == 0) {
            struct mx2_hostport again;
            if (hp.port == 0 || memchr(hp.host, '\0', sizeof(hp.host)) == NULL)
                abort();
            /* The canonical form parses back to the same address. */
            config_format_hostport(&hp, buf, sizeof(buf));
            if (config_parse_hostport(buf, 0, &again) != 0 || again.port != hp.port ||
                strcmp(again.host, hp.host) != 0)
                abort();
        }
    }

    if (size < 4096) {
        struct mx2_config cfg = {0};
        struct config_errors errs = {0};
        int rc = config_load_string(s, "fuzz.conf", &cfg, &errs);
        /* Success and an empty error list go together. */
        if ((rc == 0) != (errs.count == 0))
            abort();
        config_check_daemon(&cfg, &errs);
        config_free(&cfg);
        config_errors_free(&errs);
    }
    free(s);
    return 0;
}
