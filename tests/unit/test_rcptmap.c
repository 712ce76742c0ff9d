/*
 * test_rcptmap.c - the recipient map: key normalisation (the one normaliser
 * shared by build and lookup), build then lookup (exact, case, +tag,
 * delimiter sets and disabled, catch-all, routing characters never matched),
 * unavailable maps (missing, garbage, truncated, empty) answering
 * MX2_E_MAP_UNAVAILABLE, atomic rebuild under an open reader with
 * maybe_reopen picking up the new keys, sorted iteration, and no temporary
 * files left behind.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "rcptmap.h"

static char tmpdir[256];

static int
setup_dir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_rcptmap.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int
teardown_dir(void **state)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    char p[512];

    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
    return 0;
}

static void
path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", tmpdir, name);
}

static void
build_map(const char *path, const char *const *keys, size_t n)
{
    struct rcptmap_build *b;

    assert_int_equal(rcptmap_build_begin(path, &b), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(rcptmap_build_add(b, keys[i]), 0);
    assert_int_equal(rcptmap_build_commit(b), 0);
}

static size_t
dir_entries(void)
{
    DIR *d = opendir(tmpdir);
    struct dirent *e;
    size_t n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------ keys */

static void
test_normalize_key(void **state)
{
    static const struct {
        const char *local, *domain, *key; /* key NULL: refused */
    } rows[] = {
        {"alice", "example.jp", "alice@example.jp"},
        {"Alice", "EXAMPLE.JP", "alice@example.jp"},
        {"alice", "example.jp.", "alice@example.jp"},
        {"", "Example.JP", "@example.jp"},
        {"a.b-c_d+e=f/g'h#i$j&k*l?m^n`o{p|q}r~", "x.jp",
         "a.b-c_d+e=f/g'h#i$j&k*l?m^n`o{p|q}r~@x.jp"},
        {"\xc3\x89T\xc3\x89", "\xc3\xa9xample.jp", "\xc3\x89t\xc3\x89@\xc3\xa9xample.jp"},
        {"user", "sub_domain.example.jp", "user@sub_domain.example.jp"},
        {"a%b", "example.jp", NULL},
        {"a!b", "example.jp", NULL},
        {"a@b", "example.jp", NULL},
        {"a:b", "example.jp", NULL},
        {"a b", "example.jp", NULL},
        {"a\tb", "example.jp", NULL},
        {"a\rb", "example.jp", NULL},
        {"a\x7f", "example.jp", NULL},
        {"\"a\"", "example.jp", NULL},
        {"a\\b", "example.jp", NULL},
        {"<a>", "example.jp", NULL},
        {"a,b", "example.jp", NULL},
        {"a;b", "example.jp", NULL},
        {"a(b)", "example.jp", NULL},
        {"a[b]", "example.jp", NULL},
        {"alice", "", NULL},
        {"alice", ".", NULL},
        {"alice", "example..jp", NULL},
        {"alice", ".example.jp", NULL},
        {"alice", "example.jp..", NULL},
        {"alice", "[192.0.2.1]", NULL},
        {"alice", "exa mple.jp", NULL},
        {"alice", "exa%mple.jp", NULL},
        {"alice", "exa@mple.jp", NULL},
        {"alice", "a123456789b123456789c123456789d123456789e123456789f123456789g1234.jp", NULL},
        {"a123456789b123456789c123456789d123456789e123456789f123456789g12345", "x.jp", NULL},
    };
    char out[RCPTMAP_KEY_MAX];

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *why = NULL;
        int n = rcptmap_normalize_key(rows[i].local, strlen(rows[i].local), rows[i].domain,
                                      strlen(rows[i].domain), out, sizeof(out), &why);
        if (rows[i].key == NULL) {
            if (n != MX2_E_BAD_ADDRESS)
                fail_msg("row %zu (%s@%s): want refusal, got %d", i, rows[i].local, rows[i].domain,
                         n);
            assert_non_null(why);
        } else {
            if (n < 0)
                fail_msg("row %zu (%s@%s): refused: %s", i, rows[i].local, rows[i].domain, why);
            assert_string_equal(out, rows[i].key);
            assert_int_equal(n, strlen(rows[i].key));
        }
    }
    /* A 64-octet local part and a 253-octet domain fit RCPTMAP_KEY_MAX. */
    {
        char local[65], domain[254];
        memset(local, 'l', 64);
        local[64] = '\0';
        for (size_t i = 0; i < 253; i++)
            domain[i] = (i % 50 == 49) ? '.' : 'd';
        domain[253] = '\0';
        assert_int_equal(rcptmap_normalize_key(local, 64, domain, 253, out, sizeof(out), NULL),
                         64 + 1 + 253);
        assert_int_equal(rcptmap_normalize_key(local, 64, domain, 253, out, 100, NULL),
                         MX2_E_INVAL);
    }
}

static void
test_normalize_address(void **state)
{
    static const struct {
        const char *in, *key;
    } rows[] = {
        {"Alice@Example.JP", "alice@example.jp"},
        {"@Example.JP", "@example.jp"},
        {"a@b@example.jp", NULL},
        {"alice", NULL},
        {"alice@", NULL},
        {"@", NULL},
        {"", NULL},
    };
    char out[RCPTMAP_KEY_MAX];

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int n = rcptmap_normalize_address(rows[i].in, out, sizeof(out), NULL);
        if (rows[i].key == NULL)
            assert_int_equal(n, MX2_E_BAD_ADDRESS);
        else
            assert_string_equal(out, rows[i].key);
    }
    assert_int_equal(rcptmap_normalize_address(NULL, out, sizeof(out), NULL), MX2_E_BAD_ADDRESS);
}

/* ---------------------------------------------------------------- lookup */

static void
test_build_then_lookup(void **state)
{
    static const char *const keys[] = {
        "alice@example.jp",        "Bob@Example.JP",    "carol@example.jp",
        "carol-list@example.jp",   "@catchall.example", "postmaster@example.jp",
        "alice@example.jp", /* duplicate */
        "\xc3\xa9mile@example.jp",
    };
    static const struct {
        const char *local, *domain, *delim;
        int rc;
        const char *matched;
    } rows[] = {
        {"alice", "example.jp", "+", 0, "alice@example.jp"},
        {"ALICE", "Example.Jp", "+", 0, "alice@example.jp"},
        {"bob", "example.jp", NULL, 0, "bob@example.jp"},
        {"alice", "example.jp.", "+", 0, "alice@example.jp"},
        {"alice+tag", "example.jp", "+", 0, "alice@example.jp"},
        {"Alice+Tag+more", "EXAMPLE.JP", "+", 0, "alice@example.jp"},
        {"alice+tag", "example.jp", "", MX2_E_NOT_FOUND, NULL},
        {"alice+tag", "example.jp", NULL, MX2_E_NOT_FOUND, NULL},
        {"alice-tag", "example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"alice-tag", "example.jp", "+-", 0, "alice@example.jp"},
        {"alice+x-y", "example.jp", "-+", 0, "alice@example.jp"},
        /* An exact key wins over the delimiter cut. */
        {"carol-list", "example.jp", "-", 0, "carol-list@example.jp"},
        {"carol-other", "example.jp", "-", 0, "carol@example.jp"},
        /* A leading delimiter leaves nothing to cut (no "@domain" key by accident). */
        {"+alice", "example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"dave", "example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"alice", "example.com", "+", MX2_E_NOT_FOUND, NULL},
        {"alice", "sub.example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"\xc3\xa9mile", "example.jp", "+", 0, "\xc3\xa9mile@example.jp"},
        /* UTF-8 is not case-folded: \xc3\x89 (E acute) is another key. */
        {"\xc3\x89mile", "example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"anyone", "catchall.example", "+", 0, "@catchall.example"},
        {"ANY+one", "CATCHALL.example", "+", 0, "@catchall.example"},
        /* Routing characters are never matched, not even by the catch-all. */
        {"a%b", "catchall.example", "+", MX2_E_NOT_FOUND, NULL},
        {"a!b", "catchall.example", "+", MX2_E_NOT_FOUND, NULL},
        {"a@b", "catchall.example", "+", MX2_E_NOT_FOUND, NULL},
        {"@a:b", "catchall.example", "+", MX2_E_NOT_FOUND, NULL},
        {"alice%evil.example", "example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"alice+x%evil.example", "example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"evil.example!alice", "example.jp", "+", MX2_E_NOT_FOUND, NULL},
        {"a b", "catchall.example", "+", MX2_E_NOT_FOUND, NULL},
        {"", "catchall.example", "+", MX2_E_NOT_FOUND, NULL},
        {"x", "[192.0.2.1]", "+", MX2_E_NOT_FOUND, NULL},
        {"x", "", "+", MX2_E_NOT_FOUND, NULL},
        {"alice", "example.jp@catchall.example", "+", MX2_E_NOT_FOUND, NULL},
    };
    char path[512], matched[RCPTMAP_KEY_MAX];
    struct rcptmap *m;

    path_in(path, sizeof(path), "lookup.mdb");
    build_map(path, keys, sizeof(keys) / sizeof(keys[0]));
    assert_int_equal(rcptmap_open(path, &m), 0);
    assert_true(rcptmap_is_open(m));
    assert_int_equal(rcptmap_count(m), 7); /* the duplicate counted once */
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        int rc;
        strcpy(matched, "untouched");
        rc = rcptmap_lookup(m, rows[i].local, rows[i].domain, rows[i].delim, matched,
                            sizeof(matched));
        if (rc != rows[i].rc)
            fail_msg("row %zu (%s@%s delim '%s'): rc %d want %d", i, rows[i].local, rows[i].domain,
                     rows[i].delim ? rows[i].delim : "(null)", rc, rows[i].rc);
        if (rows[i].matched != NULL)
            assert_string_equal(matched, rows[i].matched);
    }
    /* NULL output buffer and truncation. */
    assert_int_equal(rcptmap_lookup(m, "alice", "example.jp", NULL, NULL, 0), 0);
    assert_int_equal(rcptmap_lookup(m, "alice", "example.jp", NULL, matched, 6), 0);
    assert_string_equal(matched, "alice");
    assert_int_equal(rcptmap_lookup(m, NULL, "example.jp", NULL, NULL, 0), MX2_E_NOT_FOUND);
    assert_int_equal(rcptmap_lookup(m, "alice", NULL, NULL, NULL, 0), MX2_E_NOT_FOUND);

    /* A rough speed figure, printed only: mx2d calls this on its loop. */
    {
        struct timespec t0, t1;
        const int n = 200000;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < n; i++)
            rcptmap_lookup(m, "Dave+tag", "example.jp", "+", NULL, 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        print_message("rcptmap_lookup (3 probes, miss): %.2f us\n",
                      ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / n / 1000.0);
    }
    rcptmap_close(m);
    rcptmap_close(NULL);
}

static int
collect_keys(const char *key, size_t len, void *arg)
{
    char *out = arg;
    size_t l = strlen(out);

    snprintf(out + l, 1024 - l, "%s%.*s", l ? "," : "", (int)len, key);
    return 0;
}

static int
stop_after_first(const char *key, size_t len, void *arg)
{
    (*(int *)arg)++;
    return 42;
}

static void
test_iterate_sorted(void **state)
{
    static const char *const keys[] = {"b@x.jp", "a@x.jp", "@x.jp", "ab@x.jp", "A@x.jp", "a@w.jp"};
    char path[512], out[1024] = "";
    struct rcptmap *m;
    int calls = 0;

    path_in(path, sizeof(path), "iter.mdb");
    build_map(path, keys, sizeof(keys) / sizeof(keys[0]));
    assert_int_equal(rcptmap_open(path, &m), 0);
    assert_int_equal(rcptmap_iterate(m, collect_keys, out), 0);
    assert_string_equal(out, "@x.jp,a@w.jp,a@x.jp,ab@x.jp,b@x.jp");
    assert_int_equal(rcptmap_iterate(m, stop_after_first, &calls), 42);
    assert_int_equal(calls, 1);
    rcptmap_close(m);
}

static void
test_build_refuses_bad_keys(void **state)
{
    static const char *const bad[] = {
        "alice", "a%b@x.jp", "a!b@x.jp", "a@b@x.jp", "a b@x.jp", "alice@", "@", "", "x@[1.2.3.4]",
    };
    char path[512];
    struct rcptmap_build *b;

    path_in(path, sizeof(path), "bad.mdb");
    assert_int_equal(rcptmap_build_begin(path, &b), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (rcptmap_build_add(b, bad[i]) != MX2_E_BAD_ADDRESS)
            fail_msg("key '%s' accepted", bad[i]);
    assert_int_equal(rcptmap_build_add(b, NULL), MX2_E_INVAL);
    assert_int_equal(rcptmap_build_add(b, "ok@x.jp"), 0);
    assert_int_equal(rcptmap_build_add(b, "OK@X.JP"), 0);
    assert_int_equal(rcptmap_build_count(b), 1);
    rcptmap_build_abort(b);
    rcptmap_build_abort(NULL);
    /* Abort leaves nothing behind and creates no map. */
    assert_int_equal(dir_entries(), 0);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(rcptmap_build_begin(NULL, &b), MX2_E_INVAL);
    assert_int_equal(rcptmap_build_begin("/nonexistent-dir/x.mdb", &b), -ENOENT);
    assert_null(b);
}

static void
test_empty_map(void **state)
{
    char path[512], out[1024] = "";
    struct rcptmap *m;

    path_in(path, sizeof(path), "empty.mdb");
    build_map(path, NULL, 0);
    assert_int_equal(rcptmap_open(path, &m), 0);
    assert_int_equal(rcptmap_count(m), 0);
    assert_int_equal(rcptmap_lookup(m, "a", "x.jp", "+", NULL, 0), MX2_E_NOT_FOUND);
    assert_int_equal(rcptmap_iterate(m, collect_keys, out), 0);
    assert_string_equal(out, "");
    rcptmap_close(m);
    unlink(path);
}

/* ------------------------------------------------------------ unavailable */

static void
write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void
test_unavailable_maps(void **state)
{
    static const char *const keys[] = {"alice@example.jp", "@example.jp"};
    char path[512], good[512], buf[65536];
    struct rcptmap *m;
    struct stat st;
    int fd, rc;
    ssize_t got;

    /* Missing: a handle anyway, lookups say "unavailable" (451), never 550. */
    path_in(path, sizeof(path), "missing.mdb");
    assert_int_equal(rcptmap_open(path, &m), -ENOENT);
    assert_non_null(m);
    assert_false(rcptmap_is_open(m));
    assert_int_equal(rcptmap_lookup(m, "alice", "example.jp", "+", NULL, 0), MX2_E_MAP_UNAVAILABLE);
    assert_int_equal(rcptmap_iterate(m, collect_keys, buf), MX2_E_MAP_UNAVAILABLE);
    assert_int_equal(rcptmap_maybe_reopen(m), -ENOENT);
    /* ... and the map appearing later is picked up without a restart. */
    build_map(path, keys, 2);
    assert_int_equal(rcptmap_maybe_reopen(m), 1);
    assert_int_equal(rcptmap_lookup(m, "alice", "example.jp", "+", NULL, 0), 0);
    assert_int_equal(rcptmap_maybe_reopen(m), 0);
    rcptmap_close(m);
    unlink(path);

    /* Garbage, empty, a directory. */
    path_in(path, sizeof(path), "garbage.mdb");
    memset(buf, 'G', sizeof(buf));
    write_file(path, buf, sizeof(buf));
    assert_int_equal(rcptmap_open(path, &m), MX2_E_MAP_UNAVAILABLE);
    assert_int_equal(rcptmap_lookup(m, "alice", "example.jp", "+", NULL, 0), MX2_E_MAP_UNAVAILABLE);
    rcptmap_close(m);
    write_file(path, "", 0);
    assert_int_equal(rcptmap_open(path, &m), MX2_E_MAP_UNAVAILABLE);
    rcptmap_close(m);
    unlink(path);
    assert_int_equal(rcptmap_open(tmpdir, &m), MX2_E_MAP_UNAVAILABLE);
    rcptmap_close(m);

    /* A valid map cut short: refused at open instead of SIGBUS later. */
    {
        const char *many[600];
        char names[600][32];
        for (int i = 0; i < 600; i++) {
            snprintf(names[i], sizeof(names[i]), "user%04d@example.jp", i);
            many[i] = names[i];
        }
        path_in(good, sizeof(good), "good.mdb");
        build_map(good, many, 600);
    }
    assert_int_equal(stat(good, &st), 0);
    assert_true(st.st_size > 3 * 4096);
    fd = open(good, O_RDONLY);
    got = read(fd, buf, sizeof(buf));
    close(fd);
    assert_true(got > 3 * 4096);
    path_in(path, sizeof(path), "truncated.mdb");
    write_file(path, buf, 3 * 4096);
    rc = rcptmap_open(path, &m);
    assert_int_equal(rc, MX2_E_MAP_UNAVAILABLE);
    rcptmap_close(m);
    unlink(path);
    unlink(good);

    /* Bad arguments. */
    assert_int_equal(rcptmap_open(NULL, &m), MX2_E_INVAL);
    assert_null(m);
    assert_int_equal(rcptmap_open(path, NULL), MX2_E_INVAL);
    assert_int_equal(rcptmap_lookup(NULL, "a", "b", NULL, NULL, 0), MX2_E_MAP_UNAVAILABLE);
    assert_int_equal(rcptmap_maybe_reopen(NULL), MX2_E_INVAL);
    assert_int_equal(rcptmap_reopen(NULL), MX2_E_INVAL);
}

/* ----------------------------------------------------------------- reopen */

static void
test_rebuild_under_reader(void **state)
{
    static const char *const v1[] = {"alice@example.jp", "bob@example.jp"};
    static const char *const v2[] = {"alice@example.jp", "carol@example.jp"};
    char path[512];
    struct rcptmap *m, *fresh;

    path_in(path, sizeof(path), "live.mdb");
    build_map(path, v1, 2);
    assert_int_equal(rcptmap_open(path, &m), 0);
    assert_int_equal(rcptmap_maybe_reopen(m), 0); /* unchanged */
    assert_int_equal(rcptmap_lookup(m, "bob", "example.jp", "+", NULL, 0), 0);

    /* Rebuild while m has the old map open. */
    build_map(path, v2, 2);
    /* No temporary or lock file is left beside the map. */
    assert_int_equal(dir_entries(), 1);
    /* The old reader keeps working on the old, complete map ... */
    assert_int_equal(rcptmap_lookup(m, "bob", "example.jp", "+", NULL, 0), 0);
    assert_int_equal(rcptmap_lookup(m, "carol", "example.jp", "+", NULL, 0), MX2_E_NOT_FOUND);
    /* ... a new open sees the complete new one ... */
    assert_int_equal(rcptmap_open(path, &fresh), 0);
    assert_int_equal(rcptmap_lookup(fresh, "carol", "example.jp", "+", NULL, 0), 0);
    assert_int_equal(rcptmap_lookup(fresh, "bob", "example.jp", "+", NULL, 0), MX2_E_NOT_FOUND);
    rcptmap_close(fresh);
    /* ... and the cheap check swaps it in. */
    assert_int_equal(rcptmap_maybe_reopen(m), 1);
    assert_int_equal(rcptmap_lookup(m, "carol", "example.jp", "+", NULL, 0), 0);
    assert_int_equal(rcptmap_lookup(m, "bob", "example.jp", "+", NULL, 0), MX2_E_NOT_FOUND);
    assert_int_equal(rcptmap_maybe_reopen(m), 0);

    /* A forced reopen of the same file works too (SIGHUP). */
    assert_int_equal(rcptmap_reopen(m), 1);
    assert_int_equal(rcptmap_lookup(m, "alice", "example.jp", "+", NULL, 0), 0);

    /* A broken file put in place: the old map stays in use, errors reported,
     * and the same bad file is not reread on every check. */
    {
        char tmp[512];
        path_in(tmp, sizeof(tmp), "broken.tmp");
        write_file(tmp, "definitely not lmdb, long enough to be read as a header", 56);
        assert_int_equal(rename(tmp, path), 0);
    }
    assert_int_equal(rcptmap_maybe_reopen(m), MX2_E_MAP_UNAVAILABLE);
    assert_int_equal(rcptmap_maybe_reopen(m), MX2_E_MAP_UNAVAILABLE);
    assert_int_equal(rcptmap_reopen(m), MX2_E_MAP_UNAVAILABLE);
    assert_true(rcptmap_is_open(m));
    assert_int_equal(rcptmap_lookup(m, "carol", "example.jp", "+", NULL, 0), 0);
    /* The map removed: still the old map, and an error. */
    unlink(path);
    assert_int_equal(rcptmap_maybe_reopen(m), -ENOENT);
    assert_int_equal(rcptmap_lookup(m, "carol", "example.jp", "+", NULL, 0), 0);
    /* Fixed by a good rebuild. */
    build_map(path, v1, 2);
    assert_int_equal(rcptmap_maybe_reopen(m), 1);
    assert_int_equal(rcptmap_lookup(m, "bob", "example.jp", "+", NULL, 0), 0);
    rcptmap_close(m);
    unlink(path);
}

static void
test_large_build(void **state)
{
    char path[512], key[64];
    struct rcptmap_build *b;
    struct rcptmap *m;
    const int n = 100000;

    path_in(path, sizeof(path), "large.mdb");
    assert_int_equal(rcptmap_build_begin(path, &b), 0);
    /* Descending order on purpose: the builder sorts. */
    for (int i = n - 1; i >= 0; i--) {
        snprintf(key, sizeof(key), "user%06d@example.jp", i);
        assert_int_equal(rcptmap_build_add(b, key), 0);
    }
    assert_int_equal(rcptmap_build_count(b), (size_t)n);
    assert_int_equal(rcptmap_build_commit(b), 0);
    assert_int_equal(rcptmap_open(path, &m), 0);
    assert_int_equal(rcptmap_count(m), (size_t)n);
    for (int i = 0; i < n; i += 997) {
        snprintf(key, sizeof(key), "USER%06d+x", i);
        assert_int_equal(rcptmap_lookup(m, key, "example.jp", "+", NULL, 0), 0);
    }
    assert_int_equal(rcptmap_lookup(m, "user100000", "example.jp", "+", NULL, 0), MX2_E_NOT_FOUND);
    rcptmap_close(m);
    unlink(path);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize_key),
        cmocka_unit_test(test_normalize_address),
        cmocka_unit_test_setup_teardown(test_build_then_lookup, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_iterate_sorted, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_build_refuses_bad_keys, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_empty_map, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_unavailable_maps, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_rebuild_under_reader, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_large_build, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
