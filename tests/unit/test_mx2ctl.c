/*
 * test_mx2ctl.c - the built mx2ctl binary against a spool populated through
 * the queue library: `queue` (mailq shape, pending recipients with their
 * errors, total line), `queue --json` (one valid object per line, strings
 * escaped), `mailq` alias, `show ID` (envelope, dot-stuffing undone),
 * unknown ID (exit 1, exact text), empty queue, missing spool, a corrupt
 * record, commands not available yet, usage errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "err.h"
#include "spool.h"

#define MX2CTL MX2_BINARY_DIR "/bin/mx2ctl"

static char dir[256];     /* temp root */
static char conf[512];    /* config pointing at dir/spool */
static char spooldir[512];
static char qids[2][QID_SIZE];

struct run {
    int status;
    char out[65536];
    char err[4096];
};

static void
slurp(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY);
    ssize_t n = 0, r;

    assert_true(fd >= 0);
    while ((r = read(fd, buf + n, cap - 1 - (size_t)n)) > 0)
        n += r;
    buf[n] = '\0';
    close(fd);
}

/* Run mx2ctl with argv (argv0 given, so the mailq alias can be tested). */
static void
run(struct run *r, const char *argv0, const char *const *args)
{
    char outp[600], errp[600];
    const char *argv[16];
    size_t n = 0;
    pid_t pid;
    int st;

    snprintf(outp, sizeof(outp), "%s/out", dir);
    snprintf(errp, sizeof(errp), "%s/err", dir);
    argv[n++] = argv0;
    for (; *args && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int o = open(outp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(127);
        setenv("TZ", "UTC", 1);
        execv(MX2CTL, (char *const *)argv);
        _exit(127);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    r->status = WEXITSTATUS(st);
    slurp(outp, r->out, sizeof(r->out));
    slurp(errp, r->err, sizeof(r->err));
}

static void
write_conf(const char *path, const char *spool)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "hostname = \"mx2.test\";\nspool_dir = \"%s\";\n", spool);
    assert_int_equal(fclose(f), 0);
}

/* Two messages: one deferred with an error holding quotes and a backslash
 * (and a done recipient that mailq must not list), one from <> on hold. */
static int
setup(void **state)
{
    struct spool *sp;
    struct spool_new m[2];
    struct envelope e[2];
    struct envelope_rcpt r0[3] = {
        {"alice@example.jp", "", 0, ENVELOPE_RCPT_PENDING, 0, 0, 0, ""},
        {"bob@example.jp", "", 0, ENVELOPE_RCPT_PENDING, 0, 0, 0, ""},
        {"carol@example.jp", "rfc822;carol@example.jp", ENVELOPE_NOTIFY_NEVER,
         ENVELOPE_RCPT_PENDING, 0, 0, 0, ""},
    };
    struct envelope_rcpt r1[1] = {{"dave@example.jp", "", 0, ENVELOPE_RCPT_PENDING, 0, 0, 0, ""}};
    static const char body0[] = "Subject: hello\r\n\r\n..leading dot\r\nplain\r\n";
    static const char body1[] = "Subject: bounce\r\n\r\nx\r\n";

    setenv("MX2_SPOOL_MAPSIZE", "67108864", 1);
    strcpy(dir, "/tmp/mx2-ctl-test.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(spooldir, sizeof(spooldir), "%s/spool", dir);
    snprintf(conf, sizeof(conf), "%s/mx2.conf", dir);
    write_conf(conf, spooldir);

    memset(e, 0, sizeof(e));
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 2; i++) {
        e[i].arrival_sec = 1700000000 + i;
        e[i].client_addr = "192.0.2.9";
        e[i].client_name = "c.example.org";
        e[i].helo = "c.example.org";
        e[i].proto = ENVELOPE_PROTO_ESMTPS;
        e[i].tls_cipher = "TLSv1.3 TLS_AES_128_GCM_SHA256";
        m[i].env = &e[i];
        m[i].body_fd = -1;
    }
    e[0].sender = "from@example.org";
    e[0].rcpts = r0;
    e[0].nrcpt = 3;
    e[1].sender = "";
    e[1].rcpts = r1;
    e[1].nrcpt = 1;
    m[0].body = body0;
    m[0].body_len = strlen(body0);
    m[1].body = body1;
    m[1].body_len = strlen(body1);

    assert_int_equal(spool_open(spooldir, 0, &sp), 0);
    assert_int_equal(spool_commit(sp, m, 2), 0);
    strcpy(qids[0], m[0].qid);
    strcpy(qids[1], m[1].qid);
    struct spool_op ops[5];
    memset(ops, 0, sizeof(ops));
    for (int i = 0; i < 3; i++) {
        strcpy(ops[i].qid, qids[0]);
        ops[i].kind = SPOOL_OP_RCPT;
        ops[i].rcpt = (size_t)i;
        ops[i].attempts = 1;
        ops[i].when = 1700000100;
    }
    ops[0].state = ENVELOPE_RCPT_DEFERRED;
    ops[0].error = "451 4.3.0 \"busy\" \\ try later";
    ops[1].state = ENVELOPE_RCPT_DONE;
    ops[1].error = "250 2.0.0 Ok";
    ops[2].state = ENVELOPE_RCPT_DEFERRED;
    ops[2].error = "451 4.3.0 \"busy\" \\ try later";
    strcpy(ops[3].qid, qids[1]);
    ops[3].kind = SPOOL_OP_HOLD;
    /* Invalid UTF-8 (a primary's reply may hold anything) next to valid. */
    strcpy(ops[4].qid, qids[1]);
    ops[4].kind = SPOOL_OP_RCPT;
    ops[4].state = ENVELOPE_RCPT_DEFERRED;
    ops[4].error = "bad \xff byte \xc3\xa9";
    assert_int_equal(spool_update(sp, ops, 5), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(ops[i].result, 0);
    spool_close(sp);
    return 0;
}

static int
teardown(void **state)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void
test_queue_text(void **state)
{
    struct run r;
    char want[256];

    run(&r, "mx2ctl", (const char *[]){"-c", conf, "queue", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.err, "");
    /* First message: header line, one error line for the two deferred
     * recipients, bob (done) not listed. */
    snprintf(want, sizeof(want), "%s  %8zu Tue Nov 14 22:13:20  from@example.org  (deferred)\n",
             qids[0], strlen("Subject: hello\r\n\r\n..leading dot\r\nplain\r\n"));
    if (strstr(r.out, want) == NULL)
        fail_msg("missing line:\n%s\nin:\n%s", want, r.out);
    assert_non_null(strstr(r.out, "\n(451 4.3.0 \"busy\" \\ try later)\n"
                                  "                                             alice@example.jp\n"
                                  "                                             carol@example.jp\n"));
    assert_null(strstr(r.out, "bob@example.jp"));
    snprintf(want, sizeof(want), "%s!", qids[1]);
    assert_non_null(strstr(r.out, want));
    assert_non_null(strstr(r.out, "MAILER-DAEMON  (hold)\n"));
    assert_non_null(strstr(r.out, "dave@example.jp"));
    assert_true(strncmp(r.out, "-Queue ID-", 10) == 0);
    const char *tail = "\n-- 1 Kbytes in 2 Requests.\n";
    assert_true(strlen(r.out) > strlen(tail));
    assert_string_equal(r.out + strlen(r.out) - strlen(tail), tail);

    /* Aliases: the mailq command and the mailq program name. */
    struct run a;
    run(&a, "mx2ctl", (const char *[]){"mailq", "-c", conf, NULL});
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, r.out);
    run(&a, "/usr/sbin/mailq", (const char *[]){"-c", conf, NULL});
    assert_int_equal(a.status, 0);
    assert_string_equal(a.out, r.out);
}

static void
test_queue_json(void **state)
{
    struct run r;
    char want[1024];

    run(&r, "mx2ctl", (const char *[]){"-c", conf, "queue", "--json", NULL});
    assert_int_equal(r.status, 0);
    /* bob (delivered) is not listed: SPEC lists each pending recipient. */
    snprintf(want, sizeof(want),
             "{\"id\":\"%s\",\"size\":40,\"arrival_time\":1700000000,\"sender\":\"from@example.org\","
             "\"state\":\"deferred\",\"recipients\":["
             "{\"address\":\"alice@example.jp\",\"state\":\"deferred\","
             "\"last_error\":\"451 4.3.0 \\\"busy\\\" \\\\ try later\"},"
             "{\"address\":\"carol@example.jp\",\"state\":\"deferred\","
             "\"last_error\":\"451 4.3.0 \\\"busy\\\" \\\\ try later\"}]}\n"
             "{\"id\":\"%s\",\"size\":22,\"arrival_time\":1700000001,\"sender\":\"\","
             "\"state\":\"hold\",\"recipients\":["
             "{\"address\":\"dave@example.jp\",\"state\":\"deferred\","
             "\"last_error\":\"bad \\ufffd byte \xc3\xa9\"}]}\n",
             qids[0], qids[1]);
    assert_string_equal(r.out, want);

    /* If python3 is there, every line must be valid JSON to a real parser. */
    if (access("/usr/bin/python3", X_OK) == 0) {
        char cmd[1024];
        snprintf(cmd, sizeof(cmd),
                 "TZ=UTC %s -c '%s' queue --json | /usr/bin/python3 -c 'import json,sys\n"
                 "n=0\nfor l in sys.stdin: json.loads(l); n+=1\nsys.exit(0 if n==2 else 1)'",
                 MX2CTL, conf);
        assert_int_equal(system(cmd), 0);
    }
}

static void
test_show(void **state)
{
    struct run r;
    char want[256];

    run(&r, "mx2ctl", (const char *[]){"show", qids[0], "-c", conf, NULL});
    assert_int_equal(r.status, 0);
    snprintf(want, sizeof(want), "*** ENVELOPE RECORDS %s ***\n", qids[0]);
    assert_true(strncmp(r.out, want, strlen(want)) == 0);
    static const char *const lines[] = {
        "message_size: 40\n",
        "message_arrival_time: Tue Nov 14 22:13:20 2023 (1700000000.000000)\n",
        "sender: from@example.org\n",
        "client_address: 192.0.2.9\n",
        "helo_name: c.example.org\n",
        "protocol: ESMTPS\n",
        "tls: TLSv1.3 TLS_AES_128_GCM_SHA256\n",
        "recipient: carol@example.jp\n  state: deferred, attempts: 1",
        "  orcpt: rfc822;carol@example.jp\n  notify: NEVER\n",
        "  last_error: 451 4.3.0 \"busy\" \\ try later\n",
        "recipient: bob@example.jp\n  state: done",
        /* The message as sent by the client: the stuffed dot is gone. */
        "***\nSubject: hello\n\n.leading dot\nplain\n*** MESSAGE FILE END",
    };
    for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
        if (strstr(r.out, lines[i]) == NULL)
            fail_msg("show: missing '%s' in:\n%s", lines[i], r.out);

    /* A lower-case ID pasted by an operator works too. */
    char lower[QID_SIZE];
    for (size_t i = 0; i < QID_SIZE; i++)
        lower[i] = (char)((qids[1][i] >= 'A' && qids[1][i] <= 'Z') ? qids[1][i] + 32 : qids[1][i]);
    run(&r, "mx2ctl", (const char *[]){"-c", conf, "show", lower, NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "sender: \n"));
    assert_non_null(strstr(r.out, "flags: HOLD\n"));
}

static void
test_errors(void **state)
{
    struct run r;
    static const struct {
        const char *args[6];
        int status;
        const char *err; /* exact stderr, or NULL: only non-empty */
    } rows[] = {
        {{"-c", "@CONF", "show", "0000000000000"}, 1, "mx2ctl: 0000000000000: no such message\n"},
        {{"-c", "@CONF", "show", "NOSUCH"}, 1, "mx2ctl: NOSUCH: no such message\n"},
        /* Daemon commands with no daemon (the config names no live socket). */
        {{"-c", "@CONF", "flush"}, 1, NULL},
        {{"-c", "@CONF", "delete", "0000000000000"}, 1, NULL},
        {{"-c", "@CONF", "hold", "0000000000000"}, 1, NULL},
        {{"-c", "@CONF", "release", "0000000000000"}, 1, NULL},
        {{"-c", "@CONF", "stats"}, 1, NULL},
        {{"-c", "@CONF", "export"}, 2, NULL},
        {{"-c", "@CONF", "frobnicate"}, 2, NULL},
        {{"-c", "@CONF"}, 2, NULL},
        {{"-c", "@CONF", "show"}, 2, NULL},
        {{"-c", "@CONF", "queue", "--xml"}, 2, NULL},
        {{"-c", "/nonexistent/mx2.conf", "queue"}, 1, NULL},
        {{"--bogus"}, 2, NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        const char *args[8];
        size_t n = 0;
        for (; n < 6 && rows[i].args[n] != NULL; n++)
            args[n] = strcmp(rows[i].args[n], "@CONF") == 0 ? conf : rows[i].args[n];
        args[n] = NULL;
        run(&r, "mx2ctl", args);
        if (r.status != rows[i].status)
            fail_msg("row %zu: exit %d, want %d (stderr: %s)", i, r.status, rows[i].status, r.err);
        if (rows[i].err)
            assert_string_equal(r.err, rows[i].err);
        else
            assert_true(strlen(r.err) > 0 && strncmp(r.err, "mx2ctl: ", 8) == 0);
        assert_string_equal(r.out, "");
    }

    run(&r, "mx2ctl", (const char *[]){"-h", NULL});
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "usage: mx2ctl"));
    run(&r, "mx2ctl", (const char *[]){"--version", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "mx2ctl " MX2_VERSION "\n");
}

static void
test_empty_and_missing_spool(void **state)
{
    struct run r;
    char econf[600], espool[600];
    struct spool *sp;

    snprintf(espool, sizeof(espool), "%s/empty", dir);
    snprintf(econf, sizeof(econf), "%s/empty.conf", dir);
    write_conf(econf, espool);

    /* Not created yet: an error, and mx2ctl creates nothing. */
    run(&r, "mx2ctl", (const char *[]){"-c", econf, "queue", NULL});
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, espool));
    assert_int_not_equal(access(espool, F_OK), 0);

    assert_int_equal(spool_open(espool, 0, &sp), 0);
    spool_close(sp);
    run(&r, "mx2ctl", (const char *[]){"-c", econf, "queue", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "Mail queue is empty\n");
    run(&r, "mx2ctl", (const char *[]){"-c", econf, "queue", "--json", NULL});
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");
}

static void
test_corrupt_record(void **state)
{
    struct run r;
    char qdir[600];
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = {QID_LEN, qids[1]}, v = {5, "junk!"};

    snprintf(qdir, sizeof(qdir), "%s/queue", spooldir);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 4);
    assert_int_equal(mdb_env_open(env, qdir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "env", 0, &dbi), 0);
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    run(&r, "mx2ctl", (const char *[]){"-c", conf, "queue", NULL});
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, qids[1]));
    assert_non_null(strstr(r.out, "(corrupt queue record)"));
    assert_non_null(strstr(r.out, "alice@example.jp")); /* the good one is still listed */
    run(&r, "mx2ctl", (const char *[]){"-c", conf, "show", qids[1], NULL});
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.err, "corrupt"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_text),
        cmocka_unit_test(test_queue_json),
        cmocka_unit_test(test_show),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_empty_and_missing_spool),
        cmocka_unit_test(test_corrupt_record),
    };
    /* One spool for the whole group; test_corrupt_record damages it last. */
    return cmocka_run_group_tests(tests, setup, teardown);
}
