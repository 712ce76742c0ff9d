/*
 * test_schedule.c - the flusher's pure policy with a fake clock: backoff
 * doubling and cap, jitter bounds and determinism, overflow with absurd
 * failure counts, expiry and delay-warning edges, and the primary's
 * up/down/probe transitions.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "config.h"
#include "schedule.h"

#define T0 ((int64_t)1700000000) /* the fake clock's epoch */

static struct mx2_config
cfg_make(int64_t rmin, int64_t rmax)
{
    struct mx2_config c;
    memset(&c, 0, sizeof(c));
    c.retry_min = rmin;
    c.retry_max = rmax;
    c.queue_lifetime = 5 * 86400;
    c.probe_interval = 60;
    c.delay_warning = 0;
    return c;
}

/* The base delay (no jitter) is recovered over many seeds: below the cap
 * it is the minimum and each delay stays within [base, min(base + base/10,
 * cap)]; at the cap it is the maximum (never past retry_max) and each delay
 * stays within [cap - cap/10, cap]. */
static void
test_delay_doubles_and_caps(void **state)
{
    struct mx2_config c = cfg_make(300, 4200); /* SPEC defaults: 5m .. 70m */
    static const struct {
        uint32_t failures;
        int64_t base;
    } rows[] = {
        {0, 0},    {1, 300},   {2, 600},   {3, 1200},  {4, 2400},  {5, 4200},    {6, 4200},
        {7, 4200}, {31, 4200}, {32, 4200}, {63, 4200}, {64, 4200}, {1000, 4200}, {UINT32_MAX, 4200},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int64_t lo = INT64_MAX, hi = INT64_MIN;
        for (uint32_t seed = 0; seed < 2000; seed++) {
            int64_t d = sched_retry_delay(&c, rows[i].failures, seed * 2654435761u);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        if (rows[i].base < 4200) {
            assert_int_equal(lo, rows[i].base);
            assert_true(hi <= rows[i].base + rows[i].base / 10);
        } else {
            assert_int_equal(hi, 4200);
            assert_true(lo >= 4200 - 4200 / 10);
        }
        if (rows[i].base >= 100) /* the jitter really spreads */
            assert_true(hi - lo >= rows[i].base / 20);
    }
}

static void
test_jitter_deterministic_and_bounded(void **state)
{
    struct mx2_config c = cfg_make(60, 3600);
    for (uint32_t f = 1; f < 12; f++) {
        for (uint32_t seed = 0; seed < 500; seed++) {
            int64_t a = sched_retry_delay(&c, f, seed);
            int64_t b = sched_retry_delay(&c, f, seed);
            assert_int_equal(a, b); /* no hidden randomness */
            int64_t base = 60LL << (f - 1);
            if (base >= 3600) {
                assert_true(a >= 3600 - 3600 / 10);
                assert_true(a <= 3600);
            } else {
                assert_true(a >= base);
                assert_true(a <= base + base / 10 && a <= 3600);
            }
        }
    }
    /* Neighbouring seeds (consecutive queue IDs) do not all land together. */
    int distinct = 0;
    int64_t prev = -1;
    for (uint32_t seed = 0; seed < 64; seed++) {
        int64_t d = sched_retry_delay(&c, 7, seed);
        distinct += d != prev;
        prev = d;
    }
    assert_true(distinct > 32);
}

static void
test_delay_edge_configs(void **state)
{
    static const struct {
        int64_t rmin, rmax;
        uint32_t failures;
        int64_t lo, hi;
    } rows[] = {
        {0, 0, 5, 0, 0},       /* zero retry: immediate */
        {0, 3600, 1000, 0, 0}, /* 0 doubles to 0 */
        {5, 5, 1, 5, 5},       /* span 0: no jitter */
        {10, 10, 3, 9, 10},    /* at the cap: taken off, never past it */
        {600, 300, 1, 270, 300}, /* min > max: the cap wins */
        {-5, -1, 3, 0, 0},       /* negative: clamped */
        {1, CONFIG_DURATION_MAX, 1000, CONFIG_DURATION_MAX - CONFIG_DURATION_MAX / 10,
         CONFIG_DURATION_MAX},
        {CONFIG_DURATION_MAX, CONFIG_DURATION_MAX, UINT32_MAX,
         CONFIG_DURATION_MAX - CONFIG_DURATION_MAX / 10, CONFIG_DURATION_MAX},
        {3, 1000, 2, 6, 6},
        {3, 1000, 9, 768, 844},
        {3, 1000, 10, 900, 1000}, /* 1536 > cap */
        {950, 1000, 1, 950, 1000}, /* below the cap, + jitter clamped to it */
        {950, 1000, 2, 900, 1000},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct mx2_config c = cfg_make(rows[i].rmin, rows[i].rmax);
        for (uint32_t seed = 0; seed < 300; seed++) {
            int64_t d = sched_retry_delay(&c, rows[i].failures, seed * 7919u);
            if (d < rows[i].lo || d > rows[i].hi)
                fail_msg("row %zu seed %u: %lld not in [%lld, %lld]", i, seed, (long long)d,
                         (long long)rows[i].lo, (long long)rows[i].hi);
        }
    }
}

static void
test_next_attempt(void **state)
{
    struct mx2_config c = cfg_make(300, 4200);
    for (uint32_t f = 0; f < 1001; f += 7) {
        int64_t d = sched_retry_delay(&c, f, 42);
        assert_int_equal(sched_next_attempt(&c, T0, f, 42), T0 + d);
        assert_true(sched_next_attempt(&c, T0, f, 42) >= T0);
    }
    assert_int_equal(sched_next_attempt(&c, T0, 0, 1), T0);
}

static void
test_expiry_edges(void **state)
{
    struct mx2_config c = cfg_make(300, 4200);
    c.queue_lifetime = 5 * 86400;
    static const struct {
        int64_t age;
        int expired;
    } rows[] = {
        {0, 0},         {1, 0}, {5 * 86400 - 1, 0}, {5 * 86400, 1}, {5 * 86400 + 1, 1},
        {-100, 0}, /* clock stepped back: not expired */
        {INT32_MAX, 1},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(sched_expired(&c, T0, T0 + rows[i].age), rows[i].expired);
    assert_int_equal(sched_expire_time(&c, T0), T0 + 5 * 86400);

    c.queue_lifetime = 0; /* everything is expired at once */
    assert_int_equal(sched_expired(&c, T0, T0), 1);
    c.queue_lifetime = 2;
    assert_int_equal(sched_expired(&c, T0, T0 + 1), 0);
    assert_int_equal(sched_expired(&c, T0, T0 + 2), 1);
}

static void
test_delay_warning(void **state)
{
    struct mx2_config c = cfg_make(300, 4200);
    c.queue_lifetime = 5 * 86400;
    static const struct {
        int64_t warn, age;
        int warned, due;
    } rows[] = {
        {0, 0, 0, 0},          /* off */
        {0, 10 * 86400, 0, 0}, /* off, however long */
        {4 * 3600, 4 * 3600 - 1, 0, 0},
        {4 * 3600, 4 * 3600, 0, 1},
        {4 * 3600, 4 * 3600 + 5, 0, 1},
        {4 * 3600, 4 * 3600 + 5, 1, 0}, /* once only */
        {4 * 3600, 5 * 86400 - 1, 0, 1},
        {4 * 3600, 5 * 86400, 0, 0},       /* expired: the bounce says it */
        {6 * 86400, 5 * 86400 + 10, 0, 0}, /* warning after lifetime: never */
        {-1, 86400, 0, 0},                 /* negative: off */
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        c.delay_warning = rows[i].warn;
        if (sched_delay_warning_due(&c, T0, T0 + rows[i].age, rows[i].warned) != rows[i].due)
            fail_msg("row %zu: expected %d", i, rows[i].due);
    }
}

static void
test_primary_transitions(void **state)
{
    struct mx2_config c = cfg_make(300, 4200);
    c.probe_interval = 60;
    struct sched_primary p;
    memset(&p, 0x5a, sizeof(p));
    sched_primary_init(&p);
    assert_int_equal(p.up, 1);
    assert_int_equal(p.failures, 0);
    assert_int_equal(p.down_since, 0);
    assert_int_equal(sched_probe_due(&p, T0), 0); /* up: never probe */
    assert_int_equal(sched_probe_due(&p, T0 + 1000000), 0);

    /* Success while up: no transition. */
    assert_int_equal(sched_primary_ok(&p, T0), 0);
    assert_int_equal(p.up, 1);

    /* First failure: up -> down, logged once. */
    assert_int_equal(sched_primary_failed(&p, &c, T0), 1);
    assert_int_equal(p.up, 0);
    assert_int_equal(p.down_since, T0);
    assert_int_equal(p.next_probe, T0 + 60);
    assert_int_equal(p.failures, 1);

    /* Parallel connections failing in the same round: no new transition,
     * next probe stays probe_interval after the latest failure. */
    assert_int_equal(sched_primary_failed(&p, &c, T0 + 1), 0);
    assert_int_equal(p.down_since, T0);
    assert_int_equal(p.next_probe, T0 + 61);
    assert_int_equal(p.failures, 2);

    /* Probe schedule. */
    static const struct {
        int64_t t;
        int due;
    } rows[] = {{T0 + 1, 0}, {T0 + 60, 0}, {T0 + 61, 1}, {T0 + 500, 1}};
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        assert_int_equal(sched_probe_due(&p, rows[i].t), rows[i].due);

    /* A failed probe pushes the next one by probe_interval. */
    assert_int_equal(sched_primary_failed(&p, &c, T0 + 61), 0);
    assert_int_equal(p.next_probe, T0 + 121);
    assert_int_equal(sched_probe_due(&p, T0 + 120), 0);
    assert_int_equal(sched_probe_due(&p, T0 + 121), 1);
    assert_int_equal(p.down_since, T0);

    /* The probe succeeds: down -> up, counters reset, no probing. */
    assert_int_equal(sched_primary_ok(&p, T0 + 121), 1);
    assert_int_equal(p.up, 1);
    assert_int_equal(p.failures, 0);
    assert_int_equal(p.down_since, 0);
    assert_int_equal(sched_probe_due(&p, T0 + 10000), 0);
    assert_int_equal(sched_primary_ok(&p, T0 + 122), 0);

    /* Down again later: a new down_since. */
    assert_int_equal(sched_primary_failed(&p, &c, T0 + 5000), 1);
    assert_int_equal(p.down_since, T0 + 5000);

    /* probe_interval 0 must not mean "probe in a busy loop". */
    c.probe_interval = 0;
    sched_primary_init(&p);
    assert_int_equal(sched_primary_failed(&p, &c, T0), 1);
    assert_int_equal(sched_probe_due(&p, T0), 0);
    assert_int_equal(sched_probe_due(&p, T0 + 1), 1);

    /* The failure counter saturates. */
    p.failures = UINT32_MAX;
    assert_int_equal(sched_primary_failed(&p, &c, T0 + 2), 0);
    assert_int_equal(p.failures, UINT32_MAX);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delay_doubles_and_caps),
        cmocka_unit_test(test_jitter_deterministic_and_bounded),
        cmocka_unit_test(test_delay_edge_configs),
        cmocka_unit_test(test_next_attempt),
        cmocka_unit_test(test_expiry_edges),
        cmocka_unit_test(test_delay_warning),
        cmocka_unit_test(test_primary_transitions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
