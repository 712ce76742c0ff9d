/*
 * test_err.c - the error table: ranges, texts, SMTP replies, and a drift check
 * that every reply code SPEC.md names is produced by some entry of err.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

static void
test_codes_are_negative_and_distinct(void **state)
{
    assert_true(MX2_E_INVAL < MX2_E_BASE);
    assert_true(MX2_E_INTERNAL < MX2_E_INVAL);
    assert_true(mx2_err_is_mx2(MX2_E_RELAY_DENIED));
    assert_false(mx2_err_is_mx2(0));
    assert_false(mx2_err_is_mx2(-ENOENT));
    assert_false(mx2_err_is_mx2(MX2_E_BASE));
    assert_true(mx2_err_is_mx2(MX2_E_BASE - MX2_ERRIDX_COUNT_));
    assert_false(mx2_err_is_mx2(MX2_E_BASE - MX2_ERRIDX_COUNT_ - 1));
}

static void
test_strerror(void **state)
{
    assert_string_equal(mx2_strerror(0), "Success");
    assert_string_equal(mx2_strerror(-ENOENT), strerror(ENOENT));
    assert_string_equal(mx2_strerror(MX2_E_RELAY_DENIED), "Relay access denied");
    assert_string_equal(mx2_strerror(-999999), "Unknown error");
}

static void
test_smtp_replies(void **state)
{
    static const struct {
        int err, code;
        const char *ecode;
    } rows[] = {
        {MX2_E_RELAY_DENIED, 554, "5.7.1"},  {MX2_E_USER_UNKNOWN, 550, "5.1.1"},
        {MX2_E_MAP_UNAVAILABLE, 451, "4.3.0"}, {MX2_E_TOO_MANY_RCPTS, 452, "4.5.3"},
        {MX2_E_TOO_BIG, 552, "5.3.4"},       {MX2_E_SPOOL, 452, "4.3.1"},
        {MX2_E_LOOP, 554, "5.4.6"},          {MX2_E_BARE_NEWLINE, 550, "5.5.2"},
        {MX2_E_LINE_TOO_LONG, 500, "5.5.2"}, {MX2_E_PRIMARY_UP, 421, "4.3.2"},
        {-EIO, 451, "4.3.0"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *ecode, *text;
        assert_int_equal(mx2_err_smtp(rows[i].err, &ecode, &text), rows[i].code);
        assert_string_equal(ecode, rows[i].ecode);
        assert_non_null(text);
    }
}

/* Every "NNN X.Y.Z" pair in SPEC.md must be one of err.h's replies. */
static void
test_spec_reply_codes_drift(void **state)
{
    char path[4096], line[4096];
    FILE *f;
    int found = 0;

    snprintf(path, sizeof(path), "%s/../shared/SPEC.md", MX2_SOURCE_DIR);
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "SPEC.md not found beside the checkout (%s)\n", path);
        skip();
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        for (char *p = line; (p = strchr(p, '`')) != NULL; p++) {
            int code;
            char ecode[16];
            if (sscanf(p + 1, "%3d %15[0-9.]", &code, ecode) != 2 || code < 400)
                continue;
            int ok = 0;
            for (int e = MX2_E_BASE - 1; mx2_err_is_mx2(e); e--) {
                const char *ec;
                if (mx2_err_smtp(e, &ec, NULL) == code && strcmp(ec, ecode) == 0)
                    ok = 1;
            }
            if (!ok)
                fail_msg("SPEC.md reply %d %s has no entry in err.h", code, ecode);
            found++;
        }
    }
    fclose(f);
    assert_true(found >= 8);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codes_are_negative_and_distinct),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_smtp_replies),
        cmocka_unit_test(test_spec_reply_codes_drift),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
