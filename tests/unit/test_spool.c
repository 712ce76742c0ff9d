/*
 * test_spool.c - the LMDB spool: group commit then walk/get/body (bodies from
 * memory and from a 3 MiB temp file), a short temp file failing alone,
 * per-recipient updates in one transaction, hold/release/delete, recovery
 * of tmp/, read-only opens, a corrupt record reported by walk, map full ->
 * MX2_E_SPOOL with nothing of the batch visible, dot-stuffing undone, and a
 * crash test: a child commits and updates in a loop and reports each qid
 * only after the call returned; it is SIGKILLed at a random instant and
 * every reported message must be present, intact and in the reported state.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "fsio.h"
#include "spool.h"

static char tmpl_dir[256];

static void
fresh_dir(void)
{
    char cmd[512];

    if (tmpl_dir[0] != '\0') {
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl_dir);
        if (system(cmd) != 0)
            fail_msg("cannot remove %s", tmpl_dir);
    }
    strcpy(tmpl_dir, "/tmp/mx2-spool-test.XXXXXX");
    assert_non_null(mkdtemp(tmpl_dir));
}

static int
setup(void **state)
{
    setenv("MX2_SPOOL_MAPSIZE", "268435456", 1);
    fresh_dir();
    return 0;
}

static int
teardown(void **state)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpl_dir);
    if (system(cmd) != 0)
        return -1;
    tmpl_dir[0] = '\0';
    return 0;
}

static uint64_t
fnv(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

/* A test envelope with nrcpt recipients r0@example.jp ... (strings static or
 * in the caller-provided array, so it is not passed to envelope_free). */
struct test_env {
    struct envelope e;
    struct envelope_rcpt r[4];
    char addr[4][48];
};

static void
make_env(struct test_env *t, const char *sender, size_t nrcpt)
{
    memset(t, 0, sizeof(*t));
    t->e.arrival_sec = 1700000000;
    t->e.arrival_usec = 42;
    t->e.sender = (char *)sender;
    t->e.client_addr = "192.0.2.7";
    t->e.client_name = "client.example.org";
    t->e.helo = "client.example.org";
    t->e.proto = ENVELOPE_PROTO_ESMTP;
    t->e.tls_cipher = "";
    t->e.envid = "";
    for (size_t i = 0; i < nrcpt; i++) {
        snprintf(t->addr[i], sizeof(t->addr[i]), "r%zu@example.jp", i);
        t->r[i].address = t->addr[i];
        t->r[i].orcpt = "";
        t->r[i].last_error = "";
    }
    t->e.rcpts = t->r;
    t->e.nrcpt = nrcpt;
}

struct walk_rec {
    size_t n;
    char qid[64][QID_SIZE];
    char sender[64][64];
    int err[64];
};

static int
walk_collect(void *arg, const char *qid, struct envelope *env, int err)
{
    struct walk_rec *w = arg;

    if (w->n < 64) {
        strcpy(w->qid[w->n], qid);
        w->err[w->n] = err;
        snprintf(w->sender[w->n], sizeof(w->sender[0]), "%s", env ? env->sender : "(corrupt)");
    }
    w->n++;
    return 0;
}

static void
test_commit_walk_get_body(void **state)
{
    struct spool *sp;
    struct test_env t[3];
    struct spool_new m[3];
    const char *bodies[] = {"Subject: one\r\n\r\nbody one\r\n", "Subject: two\r\n\r\n..dot\r\n",
                            ""};
    struct walk_rec w = {0};

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    make_env(&t[0], "a@example.org", 1);
    make_env(&t[1], "", 2); /* null sender <> */
    make_env(&t[2], "c@example.org", 3);
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 3; i++) {
        m[i].env = &t[i].e;
        m[i].body = bodies[i];
        m[i].body_len = strlen(bodies[i]);
        m[i].body_fd = -1;
    }
    assert_int_equal(spool_commit(sp, m, 3), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(m[i].result, 0);
        assert_true(qid_valid(m[i].qid));
        assert_string_equal(t[i].e.qid, m[i].qid);
        assert_true(t[i].e.size == strlen(bodies[i]));
    }
    assert_true(strcmp(m[0].qid, m[1].qid) < 0 && strcmp(m[1].qid, m[2].qid) < 0);

    assert_int_equal(spool_walk(sp, walk_collect, &w), 0);
    assert_int_equal(w.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(w.qid[i], m[i].qid);
        assert_int_equal(w.err[i], 0);
    }
    assert_string_equal(w.sender[1], "");

    for (int i = 0; i < 3; i++) {
        struct envelope e;
        struct spool_body b;
        assert_int_equal(spool_get(sp, m[i].qid, &e), 0);
        assert_string_equal(e.qid, m[i].qid);
        assert_int_equal(e.nrcpt, (size_t)(i + 1));
        assert_string_equal(e.client_addr, "192.0.2.7");
        assert_true(e.arrival_sec == 1700000000);
        assert_true(e.size == strlen(bodies[i]));
        envelope_free(&e);
        assert_int_equal(spool_body_open(sp, m[i].qid, &b), 0);
        assert_int_equal(b.len, strlen(bodies[i]));
        assert_memory_equal(b.data, bodies[i], b.len);
        spool_body_close(&b);
        spool_body_close(&b); /* closed: no-op */
    }

    /* Unknown and malformed IDs. */
    struct envelope e;
    struct spool_body b;
    assert_int_equal(spool_get(sp, "0000000000000", &e), MX2_E_NOT_FOUND);
    assert_int_equal(spool_get(sp, "nope", &e), MX2_E_INVAL);
    assert_int_equal(spool_body_open(sp, "0000000000000", &b), MX2_E_NOT_FOUND);
    spool_body_close(&b);

    /* A walk stops on the callback's non-zero value. */
    uint64_t avail = 0;
    assert_int_equal(spool_free_space(sp, &avail), 0);
    assert_true(avail > 0 && avail <= 268435456ull);
    spool_close(sp);
    spool_close(NULL);
}

static int
walk_stop_at_two(void *arg, const char *qid, struct envelope *env, int err)
{
    int *n = arg;
    return ++*n == 2 ? 77 : 0;
}

/* This process's file-backed resident set, in KiB (/proc/self/status). */
static long
rss_file_kib(void)
{
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");

    assert_non_null(f);
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "RssFile: %ld kB", &kib) == 1)
            break;
    fclose(f);
    assert_true(kib >= 0);
    return kib;
}

/* Read every body, check its bytes (each is filled with its index). */
static void
read_all_bodies(struct spool *sp, char qids[][QID_SIZE], size_t n, size_t len)
{
    for (size_t i = 0; i < n; i++) {
        struct spool_body b;
        assert_int_equal(spool_body_open(sp, qids[i], &b), 0);
        assert_int_equal(b.len, len);
        for (size_t k = 0; k < len; k += 512)
            if ((unsigned char)b.data[k] != (unsigned char)(i & 0xff))
                fail_msg("body %zu byte %zu: %d", i, k, b.data[k]);
        spool_body_close(&b);
    }
}

/* spool_release_pages: the map's touched pages leave the resident set, and
 * every byte reads the same afterwards, also through a body held open
 * across the release. */
static void
test_release_pages(void **state)
{
    enum { N = 400, LEN = 32 * 1024 };
    static char qids[N][QID_SIZE];
    struct spool *sp;
    struct test_env t;
    char *body = malloc(LEN);
    long before, touched, released;
    struct spool_body held;

    assert_non_null(body);
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    make_env(&t, "a@example.org", 1);
    for (size_t i = 0; i < N; i++) {
        struct spool_new m = {.env = &t.e, .body = body, .body_len = LEN, .body_fd = -1};
        memset(body, (int)(i & 0xff), LEN);
        assert_int_equal(spool_commit(sp, &m, 1), 0);
        assert_int_equal(m.result, 0);
        strcpy(qids[i], m.qid);
    }
    assert_int_equal(spool_checkpoint(sp), 0); /* all in LMDB: read through the map */
    assert_int_equal(spool_release_pages(sp), 0);
    before = rss_file_kib();
    read_all_bodies(sp, qids, N, LEN);
    touched = rss_file_kib();
    /* 400 x 32 KiB = 12.5 MiB read through the map. */
    assert_true(touched - before >= 10 * 1024);
    assert_int_equal(spool_body_open(sp, qids[7], &held), 0);
    assert_int_equal(spool_release_pages(sp), 0);
    released = rss_file_kib();
    assert_true(touched - released >= 10 * 1024);
    for (size_t k = 0; k < LEN; k++)
        if ((unsigned char)held.data[k] != 7)
            fail_msg("held body byte %zu changed after the release", k);
    spool_body_close(&held);
    read_all_bodies(sp, qids, N, LEN);
    spool_close(sp);

    /* mx2ctl's read-only open finds its map too. */
    assert_int_equal(spool_open(tmpl_dir, SPOOL_RDONLY, &sp), 0);
    read_all_bodies(sp, qids, N, LEN);
    touched = rss_file_kib();
    assert_int_equal(spool_release_pages(sp), 0);
    assert_true(touched - rss_file_kib() >= 10 * 1024);
    read_all_bodies(sp, qids, N, LEN);
    spool_close(sp);
    free(body);
}

static void
test_walk_stops(void **state)
{
    struct spool *sp;
    struct test_env t[3];
    struct spool_new m[3];
    int n = 0;

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 3; i++) {
        make_env(&t[i], "s@example.org", 1);
        m[i].env = &t[i].e;
        m[i].body = "x\r\n";
        m[i].body_len = 3;
        m[i].body_fd = -1;
    }
    assert_int_equal(spool_commit(sp, m, 3), 0);
    assert_int_equal(spool_walk(sp, walk_stop_at_two, &n), 77);
    assert_int_equal(n, 2);
    spool_close(sp);
}

static void
test_body_from_tmp_file(void **state)
{
    struct spool *sp;
    struct test_env t[3];
    struct spool_new m[3];
    size_t big = 3u << 20;
    unsigned char *data = malloc(big);
    char path[3][SPOOL_PATH_MAX];
    int fd[3];
    struct stat st;

    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(spool_tmp_open(sp, &fd[i], path[i]), 0);
        assert_int_equal(fstat(fd[i], &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
        assert_true(strncmp(path[i], tmpl_dir, strlen(tmpl_dir)) == 0);
        assert_non_null(strstr(path[i], "/tmp/"));
        assert_true(fcntl(fd[i], F_GETFD) & FD_CLOEXEC);
    }
    assert_string_not_equal(path[0], path[1]);
    assert_int_equal(fsio_write_all(fd[0], data, big), 0);
    assert_int_equal(fsio_write_all(fd[1], data, 100), 0); /* shorter than announced */
    assert_int_equal(fsio_write_all(fd[2], "hello\r\n", 7), 0);

    memset(m, 0, sizeof(m));
    for (int i = 0; i < 3; i++) {
        make_env(&t[i], "f@example.org", 1);
        m[i].env = &t[i].e;
        m[i].body_fd = fd[i];
    }
    m[0].body_len = big;
    m[1].body_len = 1000;
    m[2].body_len = 7;
    assert_int_equal(spool_commit(sp, m, 3), 0);
    assert_int_equal(m[0].result, 0);
    assert_int_equal(m[1].result, -EIO); /* fails alone */
    assert_string_equal(m[1].qid, "");
    assert_int_equal(m[2].result, 0);
    for (int i = 0; i < 3; i++) {
        close(fd[i]);
        unlink(path[i]);
    }

    struct spool_body b;
    assert_int_equal(spool_body_open(sp, m[0].qid, &b), 0);
    assert_int_equal(b.len, big);
    assert_memory_equal(b.data, data, big);
    spool_body_close(&b);
    assert_int_equal(spool_body_open(sp, m[2].qid, &b), 0);
    assert_int_equal(b.len, 7);
    assert_memory_equal(b.data, "hello\r\n", 7);
    spool_body_close(&b);

    struct spool_stats stt;
    assert_int_equal(spool_stats(sp, &stt), 0);
    assert_true(stt.messages == 2);
    assert_true(stt.bytes == big + 7);
    assert_true(stt.recipients == 2);
    spool_close(sp);
    free(data);
}

static void
commit_one(struct spool *sp, const char *sender, size_t nrcpt, char qid[QID_SIZE])
{
    struct test_env t;
    struct spool_new m = {0};

    make_env(&t, sender, nrcpt);
    m.env = &t.e;
    m.body = "Subject: x\r\n\r\nx\r\n";
    m.body_len = strlen(m.body);
    m.body_fd = -1;
    assert_int_equal(spool_commit(sp, &m, 1), 0);
    assert_int_equal(m.result, 0);
    strcpy(qid, m.qid);
}

static void
test_update_states(void **state)
{
    struct spool *sp;
    char q1[QID_SIZE], q2[QID_SIZE];
    struct envelope e;

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    commit_one(sp, "u@example.org", 3, q1);
    commit_one(sp, "v@example.org", 1, q2);

    struct spool_op ops[8];
    memset(ops, 0, sizeof(ops));
    for (int i = 0; i < 8; i++)
        strcpy(ops[i].qid, q1);
    ops[0].kind = SPOOL_OP_RCPT;
    ops[0].rcpt = 0;
    ops[0].state = ENVELOPE_RCPT_DONE;
    ops[0].error = "250 2.0.0 Ok";
    ops[0].attempts = 1;
    ops[0].when = 1700000500;
    ops[1].kind = SPOOL_OP_RCPT;
    ops[1].rcpt = 1;
    ops[1].state = ENVELOPE_RCPT_DEFERRED;
    ops[1].error = "451 4.3.0 busy\r\nsecond line";
    ops[1].attempts = 1;
    ops[1].when = 1700000500;
    ops[2].kind = SPOOL_OP_RCPT;
    ops[2].rcpt = 2;
    ops[2].state = ENVELOPE_RCPT_BOUNCED;
    ops[2].error = "550 5.1.1 unknown";
    ops[2].attempts = 1;
    ops[2].when = 1700000500;
    ops[3].kind = SPOOL_OP_SCHEDULE;
    ops[3].attempts = 1;
    ops[3].first_failure = 1700000500;
    ops[3].next_attempt = 1700000800;
    ops[4].kind = SPOOL_OP_DSN_SENT;
    ops[4].rcpt = SPOOL_RCPT_ALL;
    ops[5].kind = SPOOL_OP_RCPT; /* bad index: fails alone */
    ops[5].rcpt = 3;
    ops[6].kind = SPOOL_OP_WARNED;
    strcpy(ops[7].qid, "0000000000000"); /* unknown: fails alone */
    ops[7].kind = SPOOL_OP_HOLD;
    assert_int_equal(spool_update(sp, ops, 8), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(ops[i].result, 0);
    assert_int_equal(ops[5].result, MX2_E_INVAL);
    assert_int_equal(ops[6].result, 0);
    assert_int_equal(ops[7].result, MX2_E_NOT_FOUND);

    assert_int_equal(spool_get(sp, q1, &e), 0);
    assert_int_equal(e.rcpts[0].state, ENVELOPE_RCPT_DONE);
    assert_string_equal(e.rcpts[0].last_error, "250 2.0.0 Ok");
    assert_int_equal(e.rcpts[1].state, ENVELOPE_RCPT_DEFERRED);
    assert_string_equal(e.rcpts[1].last_error, "451 4.3.0 busy  second line");
    assert_int_equal(e.rcpts[1].attempts, 1);
    assert_true(e.rcpts[1].last_attempt == 1700000500);
    assert_int_equal(e.rcpts[2].state, ENVELOPE_RCPT_BOUNCED);
    assert_int_equal(e.rcpts[2].flags, ENVELOPE_RF_DSN_SENT);
    assert_int_equal(e.rcpts[1].flags, 0);
    assert_int_equal(e.attempts, 1);
    assert_true(e.next_attempt == 1700000800);
    assert_true(e.first_failure == 1700000500);
    assert_true(e.flags & ENVELOPE_F_WARNED);
    assert_false(e.flags & ENVELOPE_F_HOLD);
    assert_int_equal(envelope_pending_count(&e), 1);
    envelope_free(&e);

    /* Error NULL keeps the old text. */
    memset(ops, 0, sizeof(ops));
    strcpy(ops[0].qid, q1);
    ops[0].kind = SPOOL_OP_RCPT;
    ops[0].rcpt = 1;
    ops[0].state = ENVELOPE_RCPT_DEFERRED;
    ops[0].attempts = 2;
    ops[0].when = 1700000900;
    assert_int_equal(spool_update(sp, ops, 1), 0);
    assert_int_equal(spool_get(sp, q1, &e), 0);
    assert_string_equal(e.rcpts[1].last_error, "451 4.3.0 busy  second line");
    assert_int_equal(e.rcpts[1].attempts, 2);
    envelope_free(&e);

    /* Hold, release, delete; q2 untouched throughout. */
    memset(ops, 0, sizeof(ops));
    strcpy(ops[0].qid, q1);
    ops[0].kind = SPOOL_OP_HOLD;
    assert_int_equal(spool_update(sp, ops, 1), 0);
    assert_int_equal(spool_get(sp, q1, &e), 0);
    assert_true(e.flags & ENVELOPE_F_HOLD);
    envelope_free(&e);
    ops[0].kind = SPOOL_OP_RELEASE;
    assert_int_equal(spool_update(sp, ops, 1), 0);
    assert_int_equal(spool_get(sp, q1, &e), 0);
    assert_false(e.flags & ENVELOPE_F_HOLD);
    assert_true(e.next_attempt == 0);
    envelope_free(&e);
    ops[0].kind = SPOOL_OP_DELETE;
    strcpy(ops[1].qid, q1);
    ops[1].kind = SPOOL_OP_HOLD; /* after the delete in the same txn */
    assert_int_equal(spool_update(sp, ops, 2), 0);
    assert_int_equal(ops[0].result, 0);
    assert_int_equal(ops[1].result, MX2_E_NOT_FOUND);
    assert_int_equal(spool_get(sp, q1, &e), MX2_E_NOT_FOUND);
    struct spool_body b;
    assert_int_equal(spool_body_open(sp, q1, &b), MX2_E_NOT_FOUND);
    assert_int_equal(spool_update(sp, ops, 1), 0);
    assert_int_equal(ops[0].result, MX2_E_NOT_FOUND); /* second delete */
    assert_int_equal(spool_get(sp, q2, &e), 0);
    assert_int_equal(e.rcpts[0].state, ENVELOPE_RCPT_PENDING);
    envelope_free(&e);
    spool_close(sp);
}

static void
test_recover_and_readonly(void **state)
{
    struct spool *sp;
    char q[QID_SIZE], path[SPOOL_PATH_MAX], sub[SPOOL_PATH_MAX];
    int fd;
    struct spool_stats st;

    /* Read-only open of a spool that does not exist creates nothing. */
    char missing[512];
    snprintf(missing, sizeof(missing), "%s/none", tmpl_dir);
    assert_int_equal(spool_open(missing, SPOOL_RDONLY, &sp), -ENOENT);
    assert_null(sp);
    assert_int_not_equal(access(missing, F_OK), 0);

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    commit_one(sp, "keep@example.org", 2, q);
    assert_int_equal(spool_tmp_open(sp, &fd, path), 0);
    assert_int_equal(fsio_write_all(fd, "partial", 7), 0);
    close(fd);
    assert_int_equal(spool_tmp_open(sp, &fd, path), 0);
    close(fd);
    spool_close(sp);

    /* Restart: recovery removes tmp/ and counts what was committed. */
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    assert_int_equal(spool_recover(sp, &st, NULL, NULL), 0);
    assert_true(st.tmp_removed == 2);
    assert_true(st.messages == 1);
    assert_true(st.recipients == 2);
    assert_true(st.oldest_arrival == 1700000000);
    snprintf(sub, sizeof(sub), "%s/tmp", tmpl_dir);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(access(sub, F_OK), 0); /* the directory stays */
    spool_close(sp);

    /* Read-only: sees the message, refuses writes. */
    assert_int_equal(spool_open(tmpl_dir, SPOOL_RDONLY, &sp), 0);
    struct envelope e;
    assert_int_equal(spool_get(sp, q, &e), 0);
    assert_string_equal(e.sender, "keep@example.org");
    envelope_free(&e);
    struct test_env t;
    struct spool_new m = {0};
    make_env(&t, "x@example.org", 1);
    m.env = &t.e;
    m.body_fd = -1;
    assert_int_equal(spool_commit(sp, &m, 1), MX2_E_INVAL);
    assert_int_equal(m.result, MX2_E_INVAL);
    struct spool_op op = {.kind = SPOOL_OP_HOLD};
    strcpy(op.qid, q);
    assert_int_equal(spool_update(sp, &op, 1), MX2_E_INVAL);
    assert_int_equal(spool_tmp_open(sp, &fd, path), MX2_E_INVAL);
    assert_int_equal(spool_recover(sp, &st, NULL, NULL), MX2_E_INVAL);
    spool_close(sp);

    /* A directory that is not a spool. */
    assert_int_equal(spool_open(tmpl_dir, 0x80, &sp), MX2_E_INVAL);
}

/* A record that does not decode is reported by walk/get, never trusted. */
static void
test_corrupt_record_reported(void **state)
{
    struct spool *sp;
    char q1[QID_SIZE], q2[QID_SIZE], qdir[512];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k, v;
    struct walk_rec w = {0};

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    commit_one(sp, "one@example.org", 1, q1);
    commit_one(sp, "two@example.org", 1, q2);
    assert_int_equal(spool_checkpoint(sp), 0); /* as mx2d's clean stop: all in LMDB */
    spool_close(sp);

    /* Damage q1's envelope behind the spool's back. */
    snprintf(qdir, sizeof(qdir), "%s/queue", tmpl_dir);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    assert_int_equal(mdb_env_open(env, qdir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "env", 0, &dbi), 0);
    k.mv_size = QID_LEN;
    k.mv_data = q1;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    unsigned char *copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    copy[v.mv_size / 2] ^= 0x20;
    v.mv_data = copy;
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    free(copy);

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    assert_int_equal(spool_walk(sp, walk_collect, &w), 0);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.qid[0], q1);
    assert_int_equal(w.err[0], MX2_E_CORRUPT);
    assert_string_equal(w.sender[0], "(corrupt)");
    assert_int_equal(w.err[1], 0);
    struct envelope e;
    assert_int_equal(spool_get(sp, q1, &e), MX2_E_CORRUPT);
    struct spool_stats st;
    assert_int_equal(spool_stats(sp, &st), 0);
    assert_true(st.messages == 2 && st.corrupt == 1);
    /* An update of it fails alone; a delete removes it. */
    struct spool_op ops[2] = {{.kind = SPOOL_OP_HOLD}, {.kind = SPOOL_OP_DELETE}};
    strcpy(ops[0].qid, q1);
    strcpy(ops[1].qid, q1);
    assert_int_equal(spool_update(sp, ops, 2), 0);
    assert_int_equal(ops[0].result, MX2_E_CORRUPT);
    assert_int_equal(ops[1].result, 0);
    assert_int_equal(spool_stats(sp, &st), 0);
    assert_true(st.messages == 1 && st.corrupt == 0);
    spool_close(sp);
}

/* Damage the spool behind its back: apply put/del to one named DB. value
 * NULL deletes the key; else it is stored as given. */
static void
raw_set(const char *db, const char *key, size_t keylen, const void *value, size_t len)
{
    char qdir[512];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {keylen, (void *)key}, v = {len, (void *)value};

    snprintf(qdir, sizeof(qdir), "%s/queue", tmpl_dir);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    assert_int_equal(mdb_env_open(env, qdir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    if (value == NULL)
        assert_int_equal(mdb_del(txn, dbi, &k, NULL), 0);
    else
        assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* The stored value of key in db (malloc'd copy), *len its size. */
static unsigned char *
raw_get(const char *db, const char *key, size_t *len)
{
    char qdir[512];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {QID_LEN, (void *)key}, v;
    unsigned char *copy;

    snprintf(qdir, sizeof(qdir), "%s/queue", tmpl_dir);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    assert_int_equal(mdb_env_open(env, qdir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    copy = malloc(v.mv_size);
    memcpy(copy, v.mv_data, v.mv_size);
    *len = v.mv_size;
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return copy;
}

struct qrec {
    size_t n;
    char qid[8][QID_SIZE];
    char why[8][200];
    int saved[8];
};

static void
quarantine_collect(void *arg, const char *qid, const char *why, const char *dir)
{
    struct qrec *q = arg;

    if (dir != NULL)
        assert_non_null(strstr(dir, "/quarantine"));
    if (q->n < 8) {
        q->saved[q->n] = dir != NULL;
        snprintf(q->qid[q->n], QID_SIZE, "%s", qid);
        snprintf(q->why[q->n], sizeof(q->why[0]), "%s", why);
    }
    q->n++;
}

/* The file <spool>/quarantine/<name> holds exactly want[0..len). */
static void
assert_qfile(const char *name, const unsigned char *want, size_t len)
{
    char path[600];
    unsigned char buf[4096];
    FILE *f;
    size_t got;

    snprintf(path, sizeof(path), "%s/quarantine/%s", tmpl_dir, name);
    f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("%s missing", path);
    got = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    assert_int_equal(got, len);
    assert_memory_equal(buf, want, len);
}

/* Recovery moves each kind of untrustworthy record to quarantine/ with its
 * bytes, reports it, and leaves the good messages alone. */
static void
test_recover_quarantines(void **state)
{
    struct spool *sp;
    char good1[QID_SIZE], bad_crc[QID_SIZE], short_body[QID_SIZE], no_body[QID_SIZE],
        good2[QID_SIZE];
    unsigned char *env_crc, *env_short, *body_short, *env_nobody, *body_nobody;
    size_t n_env_crc, n_env_short, n_body_short, n_env_nobody, n_body_nobody;
    struct spool_stats st;
    struct walk_rec w = {0};
    struct qrec q = {0};
    struct envelope e;
    (void)state;

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    commit_one(sp, "good1@example.org", 1, good1);
    commit_one(sp, "crc@example.org", 1, bad_crc);
    commit_one(sp, "short@example.org", 1, short_body);
    commit_one(sp, "nobody@example.org", 2, no_body);
    commit_one(sp, "good2@example.org", 1, good2);
    assert_int_equal(spool_checkpoint(sp), 0); /* as mx2d's clean stop: all in LMDB */
    spool_close(sp);

    /* A flipped bit in an envelope (CRC), a body cut short, a body gone, and
     * a body whose envelope is gone (orphan, under a made-up valid ID). */
    env_crc = raw_get("env", bad_crc, &n_env_crc);
    env_crc[n_env_crc / 2] ^= 0x01;
    raw_set("env", bad_crc, QID_LEN, env_crc, n_env_crc);
    env_short = raw_get("env", short_body, &n_env_short);
    body_short = raw_get("body", short_body, &n_body_short);
    raw_set("body", short_body, QID_LEN, body_short, n_body_short - 3);
    env_nobody = raw_get("env", no_body, &n_env_nobody);
    body_nobody = raw_get("body", no_body, &n_body_nobody);
    raw_set("body", no_body, QID_LEN, NULL, 0);
    raw_set("body", "0000000000001", QID_LEN, "orphan", 6);

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    assert_int_equal(spool_recover(sp, &st, quarantine_collect, &q), 0);
    assert_int_equal(st.quarantined, 4);
    assert_int_equal(q.n, 4);
    /* Envelopes first, in queue order, then orphan bodies. */
    assert_string_equal(q.qid[0], bad_crc);
    assert_non_null(strstr(q.why[0], "checksum"));
    assert_string_equal(q.qid[1], short_body);
    assert_non_null(strstr(q.why[1], "truncated"));
    assert_string_equal(q.qid[2], no_body);
    assert_non_null(strstr(q.why[2], "body missing"));
    assert_string_equal(q.qid[3], "0000000000001");
    assert_non_null(strstr(q.why[3], "without an envelope"));
    /* The rest of the queue is intact and nothing corrupt is left. */
    assert_true(st.messages == 2 && st.corrupt == 0);
    assert_int_equal(spool_walk(sp, walk_collect, &w), 0);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.qid[0], good1);
    assert_string_equal(w.qid[1], good2);
    assert_int_equal(spool_get(sp, bad_crc, &e), MX2_E_NOT_FOUND);
    spool_close(sp);

    /* The stored bytes, exactly, under the ID's name. */
    char name[64];
    snprintf(name, sizeof(name), "%s.env", bad_crc);
    assert_qfile(name, env_crc, n_env_crc);
    snprintf(name, sizeof(name), "%s.env", short_body);
    assert_qfile(name, env_short, n_env_short);
    snprintf(name, sizeof(name), "%s.body", short_body);
    assert_qfile(name, body_short, n_body_short - 3);
    snprintf(name, sizeof(name), "%s.env", no_body);
    assert_qfile(name, env_nobody, n_env_nobody);
    assert_qfile("0000000000001.body", (const unsigned char *)"orphan", 6);

    /* A second recovery finds nothing more; a new quarantine of a name
     * already there never overwrites it. */
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    memset(&q, 0, sizeof(q));
    assert_int_equal(spool_recover(sp, &st, quarantine_collect, &q), 0);
    assert_true(q.n == 0 && st.quarantined == 0 && st.messages == 2);
    spool_close(sp);
    raw_set("body", "0000000000001", QID_LEN, "again", 5);
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    assert_int_equal(spool_recover(sp, &st, NULL, NULL), 0);
    assert_int_equal(st.quarantined, 1);
    spool_close(sp);
    assert_qfile("0000000000001.body", (const unsigned char *)"orphan", 6);
    assert_qfile("0000000000001.1.body", (const unsigned char *)"again", 5);

    free(env_crc);
    free(env_short);
    free(body_short);
    free(env_nobody);
    free(body_nobody);
}

/* When the bytes cannot be saved (here quarantine/ cannot be created: a
 * file has its name), the record is reported and left in place, never
 * deleted; the next recovery that can save it quarantines it. */
static void
test_quarantine_unsaved_is_left_in_place(void **state)
{
    struct spool *sp;
    char good[QID_SIZE], bad[QID_SIZE], qpath[512];
    unsigned char *env;
    size_t n;
    struct spool_stats st;
    struct qrec q = {0};
    FILE *f;
    (void)state;

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    commit_one(sp, "good@example.org", 1, good);
    commit_one(sp, "bad@example.org", 1, bad);
    assert_int_equal(spool_checkpoint(sp), 0); /* as mx2d's clean stop: all in LMDB */
    spool_close(sp);
    env = raw_get("env", bad, &n);
    env[n - 1] ^= 0x80; /* the CRC itself */
    raw_set("env", bad, QID_LEN, env, n);
    free(env);
    snprintf(qpath, sizeof(qpath), "%s/quarantine", tmpl_dir);
    f = fopen(qpath, "w");
    assert_non_null(f);
    fclose(f);

    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    assert_int_equal(spool_recover(sp, &st, quarantine_collect, &q), 0);
    assert_int_equal(q.n, 1);
    assert_string_equal(q.qid[0], bad);
    assert_int_equal(q.saved[0], 0);
    assert_non_null(strstr(q.why[0], "left in place"));
    assert_true(st.quarantined == 0 && st.messages == 2 && st.corrupt == 1);
    spool_close(sp);

    assert_int_equal(unlink(qpath), 0);
    memset(&q, 0, sizeof(q));
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    assert_int_equal(spool_recover(sp, &st, quarantine_collect, &q), 0);
    assert_true(q.n == 1 && q.saved[0] == 1);
    assert_true(st.quarantined == 1 && st.messages == 1 && st.corrupt == 0);
    spool_close(sp);
}

static void
test_map_full(void **state)
{
    struct spool *sp;
    char q[QID_SIZE];
    struct test_env t[3];
    struct spool_new m[3];
    size_t big = 2u << 20;
    char *body = malloc(big);
    struct walk_rec w = {0};

    memset(body, 'm', big);
    setenv("MX2_SPOOL_MAPSIZE", "1048576", 1);
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
    commit_one(sp, "before@example.org", 1, q); /* small ones still fit */
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 3; i++) {
        make_env(&t[i], "full@example.org", 1);
        m[i].env = &t[i].e;
        m[i].body_fd = -1;
        m[i].body = body;
        m[i].body_len = i == 1 ? big : 100;
    }
    assert_int_equal(spool_commit(sp, m, 3), MX2_E_SPOOL);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(m[i].result, MX2_E_SPOOL);
        assert_string_equal(m[i].qid, "");
    }
    assert_int_equal(spool_walk(sp, walk_collect, &w), 0);
    assert_int_equal(w.n, 1); /* nothing of the failed batch is visible */
    assert_string_equal(w.qid[0], q);
    /* The spool still works after the failure. */
    commit_one(sp, "after@example.org", 1, q);
    spool_close(sp);
    setenv("MX2_SPOOL_MAPSIZE", "268435456", 1);

    /* A bad MX2_SPOOL_MAPSIZE is refused, not ignored. */
    setenv("MX2_SPOOL_MAPSIZE", "12abc", 1);
    assert_int_equal(spool_open(tmpl_dir, 0, &sp), MX2_E_INVAL);
    setenv("MX2_SPOOL_MAPSIZE", "268435456", 1);
    free(body);
}

struct unstuff_out {
    char buf[256];
    size_t len;
};

static int
unstuff_cb(void *arg, const unsigned char *p, size_t n)
{
    struct unstuff_out *o = arg;
    assert_true(o->len + n < sizeof(o->buf));
    memcpy(o->buf + o->len, p, n);
    o->len += n;
    return 0;
}

static void
test_unstuff(void **state)
{
    static const struct {
        const char *in, *out;
    } rows[] = {
        {"", ""},
        {"a\r\n", "a\r\n"},
        {"..\r\n", ".\r\n"},
        {"...x\r\n.y\r\nz.\r\n", "..x\r\ny\r\nz.\r\n"},
        {".\r\n", "\r\n"},
        {"a\r\n..", "a\r\n."}, /* no final line end */
        {"x.\r\n.", "x.\r\n"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct unstuff_out o = {{0}, 0};
        assert_int_equal(spool_body_unstuff((const unsigned char *)rows[i].in,
                                            strlen(rows[i].in), unstuff_cb, &o),
                         0);
        o.buf[o.len] = '\0';
        assert_string_equal(o.buf, rows[i].out);
    }
}

/* ---- crash test ---- */

/* Child: commit batches (bodies from memory and from temp files) and mark
 * the first recipient of some messages done; report each line only after the
 * call that made it durable returned. Runs until killed. */
static void
crash_child(int wfd, unsigned seed)
{
    struct spool *sp;
    unsigned char *body = malloc(300000);
    unsigned r = seed;

    if (spool_open(tmpl_dir, 0, &sp) != 0)
        _exit(3);
    for (;;) {
        struct test_env t[8];
        struct spool_new m[8];
        int fds[8];
        char paths[8][SPOOL_PATH_MAX];
        size_t n = 1 + (r = r * 1103515245u + 12345u) % 8;
        char line[128];

        memset(m, 0, sizeof(m));
        for (size_t i = 0; i < n; i++) {
            size_t len = (r = r * 1103515245u + 12345u) % 60000;
            for (size_t j = 0; j < len; j++)
                body[j] = (unsigned char)((r >> 7) + j * 31);
            make_env(&t[i], "crash@example.org", 2);
            m[i].env = &t[i].e;
            m[i].body_len = len;
            m[i].body_fd = -1;
            fds[i] = -1;
            if (i % 2) {
                if (spool_tmp_open(sp, &fds[i], paths[i]) != 0 ||
                    fsio_write_all(fds[i], body, len) != 0)
                    _exit(4);
                m[i].body_fd = fds[i];
            } else {
                m[i].body = malloc(len + 1);
                memcpy((void *)m[i].body, body, len);
            }
        }
        int crc = spool_commit(sp, m, n);
        if (crc == MX2_E_SPOOL) {
            /* The test map is full (a fast disk fits hundreds of commits in
             * the run time): nothing more to do but wait for the kill. */
            for (;;)
                pause();
        }
        if (crc != 0)
            _exit(5);
        for (size_t i = 0; i < n; i++) {
            const void *p = m[i].body;
            uint64_t h;
            if (m[i].result != 0)
                _exit(6);
            if (fds[i] >= 0) {
                unsigned char *tmp = malloc(m[i].body_len + 1);
                if (pread(fds[i], tmp, m[i].body_len, 0) != (ssize_t)m[i].body_len)
                    _exit(7);
                h = fnv(tmp, m[i].body_len);
                free(tmp);
                close(fds[i]);
                unlink(paths[i]);
            } else {
                h = fnv(p, m[i].body_len);
                free((void *)p);
            }
            int k = snprintf(line, sizeof(line), "C %s %016llx %zu\n", m[i].qid,
                             (unsigned long long)h, m[i].body_len);
            if (write(wfd, line, (size_t)k) != k)
                _exit(8);
        }
        /* Mark recipient 0 of the first message done. */
        struct spool_op op = {.kind = SPOOL_OP_RCPT, .rcpt = 0, .state = ENVELOPE_RCPT_DONE,
                              .error = "250 ok", .attempts = 1, .when = 1700000001};
        strcpy(op.qid, m[0].qid);
        if (spool_update(sp, &op, 1) != 0 || op.result != 0)
            _exit(9);
        int k = snprintf(line, sizeof(line), "U %s\n", m[0].qid);
        if (write(wfd, line, (size_t)k) != k)
            _exit(8);
    }
}

static void
test_crash_kill9(void **state)
{
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();

    /* Room for every round even on a fast, idle disk. */
    setenv("MX2_SPOOL_MAPSIZE", "2147483648", 1);
    for (int round = 0; round < 4; round++) {
        int p[2];
        pid_t pid;
        char *buf = malloc(1 << 22);
        size_t len = 0;

        assert_int_equal(pipe(p), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            crash_child(p[1], seed + (unsigned)round);
        }
        close(p[1]);
        /* Let it run 150..650 ms, then kill -9 at whatever it is doing. */
        struct timespec ts = {0, (long)(150 + (seed + (unsigned)round * 7919u) % 500) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        /* It must not have died of an error of its own. */
        if (!WIFSIGNALED(status))
            fail_msg("crash child exited by itself with status %d", WEXITSTATUS(status));
        for (;;) {
            ssize_t r = read(p[0], buf + len, (1 << 22) - 1 - len);
            if (r <= 0)
                break;
            len += (size_t)r;
        }
        close(p[0]);
        buf[len] = '\0';

        struct spool *sp;
        struct spool_stats st;
        size_t committed = 0, updated = 0;
        assert_int_equal(spool_open(tmpl_dir, 0, &sp), 0);
        assert_int_equal(spool_recover(sp, &st, NULL, NULL), 0);
        assert_true(st.corrupt == 0);
        char *save = NULL;
        for (char *ln = strtok_r(buf, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
            char kind, qid[32];
            unsigned long long h;
            size_t blen;
            struct envelope e;
            if (ln[0] == 'C' && sscanf(ln, "%c %31s %llx %zu", &kind, qid, &h, &blen) == 4) {
                struct spool_body b;
                assert_int_equal(spool_get(sp, qid, &e), 0);
                assert_true(e.size == blen);
                assert_int_equal(e.nrcpt, 2);
                envelope_free(&e);
                assert_int_equal(spool_body_open(sp, qid, &b), 0);
                assert_int_equal(b.len, blen);
                if (fnv(b.data, b.len) != h)
                    fail_msg("round %d: body of %s damaged", round, qid);
                spool_body_close(&b);
                committed++;
            } else if (ln[0] == 'U' && sscanf(ln, "%c %31s", &kind, qid) == 2) {
                assert_int_equal(spool_get(sp, qid, &e), 0);
                assert_int_equal(e.rcpts[0].state, ENVELOPE_RCPT_DONE);
                envelope_free(&e);
                updated++;
            }
        }
        /* Everything in the spool is whole (walk decodes all), and the
         * spool holds at least what was reported (more is fine: a commit
         * may finish just before the kill, before its report). */
        assert_true(st.messages >= committed);
        fprintf(stderr, "round %d: %zu reported committed, %zu updated, %llu in spool, "
                        "%llu tmp removed\n",
                round, committed, updated, (unsigned long long)st.messages,
                (unsigned long long)st.tmp_removed);
        assert_true(committed > 0);
        spool_close(sp);
        free(buf);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_walk_get_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_walk_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_body_from_tmp_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_states, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_and_readonly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_record_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recover_quarantines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quarantine_unsaved_is_left_in_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test(test_unstuff),
        cmocka_unit_test_setup_teardown(test_crash_kill9, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
