/*
 * test_qid.c - queue IDs: format, order, monotonic under a clock stepped
 * back, parse/validate (good and bad input), uniqueness from two threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "qid.h"

static int
qid_chars_ok(const char *s)
{
    if (strlen(s) != QID_LEN)
        return 0;
    for (size_t i = 0; i < QID_LEN; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'Z')))
            return 0;
    return 1;
}

static void
test_format_and_parse(void **state)
{
    static const struct {
        uint64_t v;
        const char *s;
    } rows[] = {
        {0, "0000000000000"},
        {1, "0000000000001"},
        {31, "000000000000V"},
        {32, "0000000000010"},
        {(UINT64_C(1) << 62) - 1, "3VVVVVVVVVVVV"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char buf[QID_SIZE];
        uint64_t back;
        qid_format(rows[i].v, buf);
        assert_string_equal(buf, rows[i].s);
        assert_int_equal(qid_parse(buf, strlen(buf), &back), 0);
        assert_true(back == rows[i].v);
        assert_true(qid_valid(buf));
    }
}

static void
test_bad_ids_refused(void **state)
{
    static const char *bad[] = {
        "",
        "000000000000",        /* 12 */
        "00000000000000",      /* 14 */
        "000000000000W",       /* outside the alphabet */
        "000000000000a",       /* lower case */
        "00000000000-0",
        "4000000000000",       /* above 2^62 - 1 */
        "V000000000000",       /* would overflow 64 bits */
        "000000 000000",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(qid_parse(bad[i], strlen(bad[i]), NULL), MX2_E_INVAL);
        assert_false(qid_valid(bad[i]));
    }
    assert_false(qid_valid(NULL));
    /* An embedded NUL with the right length is refused too. */
    assert_int_equal(qid_parse("000000\0" "000000", QID_LEN, NULL), MX2_E_INVAL);
}

static void
test_order_and_clock_step_back(void **state)
{
    struct qid_gen g;
    char a[QID_SIZE], b[QID_SIZE], c[QID_SIZE], d[QID_SIZE];
    uint64_t t = UINT64_C(1700000000000000);

    qid_gen_init(&g, 0);
    uint64_t va = qid_next_at(&g, t, a);
    uint64_t vb = qid_next_at(&g, t, b);          /* same microsecond */
    uint64_t vc = qid_next_at(&g, t - 5000000, c); /* clock 5 s back */
    uint64_t vd = qid_next_at(&g, t + 1, d);
    assert_true(va < vb && vb < vc && vc < vd);
    assert_true(strcmp(a, b) < 0 && strcmp(b, c) < 0 && strcmp(c, d) < 0);
    assert_true(qid_usec(va) == t);
    assert_true(qid_usec(vd) == t + 1);
    assert_true(qid_chars_ok(a) && qid_chars_ok(d));

    /* A floor from a spool written with a clock far ahead wins over now. */
    qid_gen_init(&g, vd + 1000);
    assert_true(qid_next_at(&g, t, a) == vd + 1001);
    qid_gen_raise(&g, 5); /* never lowers */
    assert_true(qid_next_at(&g, t, a) == vd + 1002);

    /* The real clock: current and increasing. */
    qid_gen_init(&g, 0);
    uint64_t r1 = qid_next(&g, a), r2 = qid_next(&g, b);
    assert_true(r1 < r2);
    assert_true(qid_usec(r1) > t); /* after Nov 2023 */
    assert_true(qid_chars_ok(a) && qid_chars_ok(b));
}

/* Ordering through 1024+ ids in one microsecond: the sequence carries into
 * the time bits, still unique and increasing. */
static void
test_sequence_overflow(void **state)
{
    struct qid_gen g;
    char prev[QID_SIZE], cur[QID_SIZE];

    qid_gen_init(&g, 0);
    qid_next_at(&g, 1000, prev);
    for (int i = 0; i < 3000; i++) {
        qid_next_at(&g, 1000, cur);
        assert_true(strcmp(prev, cur) < 0);
        memcpy(prev, cur, QID_SIZE);
    }
}

#define PER_THREAD 100000

struct thr {
    struct qid_gen *g;
    uint64_t *out;
};

static void *
thr_main(void *arg)
{
    struct thr *t = arg;
    char buf[QID_SIZE];
    uint64_t prev = 0;

    for (int i = 0; i < PER_THREAD; i++) {
        t->out[i] = qid_next(t->g, buf);
        /* Each thread sees its own IDs increase. */
        if (t->out[i] <= prev)
            t->out[i] = 0;
        prev = t->out[i];
    }
    return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void
test_unique_two_threads(void **state)
{
    struct qid_gen g;
    uint64_t *all = calloc(2 * PER_THREAD, sizeof(*all));
    struct thr t1 = {&g, all}, t2 = {&g, all + PER_THREAD};
    pthread_t a, b;

    assert_non_null(all);
    qid_gen_init(&g, 0);
    assert_int_equal(pthread_create(&a, NULL, thr_main, &t1), 0);
    assert_int_equal(pthread_create(&b, NULL, thr_main, &t2), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    qsort(all, 2 * PER_THREAD, sizeof(*all), cmp_u64);
    assert_true(all[0] != 0); /* no thread saw a non-increasing ID */
    for (size_t i = 1; i < 2 * PER_THREAD; i++)
        assert_true(all[i - 1] < all[i]);
    free(all);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_parse),
        cmocka_unit_test(test_bad_ids_refused),
        cmocka_unit_test(test_order_and_clock_step_back),
        cmocka_unit_test(test_sequence_overflow),
        cmocka_unit_test(test_unique_two_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
