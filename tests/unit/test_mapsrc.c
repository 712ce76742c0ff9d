/*
 * test_mapsrc.c - the passwd / aliases / list parsers of mx2map, table-driven:
 * good and bad lines, uid/shell/system/exclude filtering, continuation lines,
 * comments, quoting, :include:, routing characters, line numbers in reports,
 * and FILE* input agreeing with buffer input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mapsrc.h"

/* Collects names as "a,b,c" and bad reports as "LINE|reason;...". */
struct collect {
    char names[8192];
    char bad[8192];
    size_t nnames, nbad;
    char file[64];
};

static void
collect_name(void *arg, const char *name)
{
    struct collect *c = arg;
    size_t l = strlen(c->names);

    snprintf(c->names + l, sizeof(c->names) - l, "%s%s", l ? "," : "", name);
    c->nnames++;
}

static void
collect_bad(void *arg, const char *file, unsigned long line, const char *reason)
{
    struct collect *c = arg;
    size_t l = strlen(c->bad);

    snprintf(c->file, sizeof(c->file), "%s", file);
    snprintf(c->bad + l, sizeof(c->bad) - l, "%lu|%s;", line, reason);
    c->nbad++;
}

static struct mapsrc_sink
sink_for(struct collect *c)
{
    memset(c, 0, sizeof(*c));
    return (struct mapsrc_sink){collect_name, collect_bad, c};
}

/* ---------------------------------------------------------------- passwd */

enum pw_fate { PW_TAKEN, PW_UID, PW_SYSTEM, PW_SHELL, PW_EXCLUDED, PW_BAD, PW_IGNORED };

static void
test_passwd_lines(void **state)
{
    static const struct {
        const char *line;
        enum pw_fate fate;
        const char *name; /* when taken */
    } rows[] = {
        {"alice:x:1000:1000:Alice:/home/alice:/bin/bash", PW_TAKEN, "alice"},
        {"Bob:x:1001:1001::/home/bob:/bin/zsh", PW_TAKEN, "bob"},
        {"carol:x:4294967294:1::/:", PW_TAKEN, "carol"}, /* empty shell = /bin/sh */
        {"dave.smith:*:2000:100:Dave,,,:/home/d:/usr/bin/fish", PW_TAKEN, "dave.smith"},
        {"user-1:x:1000:1000::/home/u:/bin/sh\r", PW_TAKEN, "user-1"},
        {"root:x:0:0:root:/root:/bin/bash", PW_UID, NULL},
        {"daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin", PW_UID, NULL},
        {"olduser:x:999:999::/home/o:/bin/bash", PW_UID, NULL},
        {"nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin", PW_SYSTEM, NULL},
        {"postfix:x:5000:5000::/var/spool/postfix:/bin/sh", PW_SYSTEM, NULL},
        {"systemd-network:x:1998:1998::/:/bin/sh", PW_SYSTEM, NULL},
        {"_apt:x:1999:65534::/nonexistent:/bin/sh", PW_SYSTEM, NULL},
        {"WWW-DATA:x:3000:3000::/var/www:/bin/sh", PW_SYSTEM, NULL},
        {"host$:x:5001:515::/:/bin/sh", PW_SYSTEM, NULL},
        {"svc:x:1500:1500::/:/usr/sbin/nologin", PW_SHELL, NULL},
        {"svc2:x:1500:1500::/:/sbin/nologin", PW_SHELL, NULL},
        {"svc3:x:1500:1500::/:/bin/false", PW_SHELL, NULL},
        {"svc4:x:1500:1500::/:/usr/bin/false  ", PW_SHELL, NULL},
        {"svc5:x:1500:1500::/:/usr/local/bin/my-nologin", PW_SHELL, NULL},
        {"guest:x:1600:1600::/home/guest:/bin/bash", PW_EXCLUDED, NULL},
        {"GUEST2:x:1600:1600::/home/guest:/bin/bash", PW_EXCLUDED, NULL},
        {"", PW_IGNORED, NULL},
        {"   ", PW_IGNORED, NULL},
        {"# a comment", PW_IGNORED, NULL},
        {"short:x:1000", PW_BAD, NULL},
        {"too:many:1000:1:g:h:s:extra", PW_BAD, NULL},
        {"nouid:x::1::/:/bin/sh", PW_BAD, NULL},
        {"neguid:x:-5:1::/:/bin/sh", PW_BAD, NULL},
        {"hexuid:x:0x10:1::/:/bin/sh", PW_BAD, NULL},
        {"biguid:x:99999999999:1::/:/bin/sh", PW_BAD, NULL},
        {"huge:x:4294967296:1::/:/bin/sh", PW_BAD, NULL},
        {":x:1000:1::/:/bin/sh", PW_BAD, NULL},
        {"a%b:x:1000:1::/:/bin/sh", PW_BAD, NULL},
        {"a!b:x:1000:1::/:/bin/sh", PW_BAD, NULL},
        {"a b:x:1000:1::/:/bin/sh", PW_BAD, NULL},
        {"a\x01"
         "b:x:1000:1::/:/bin/sh",
         PW_BAD, NULL},
        {"a\"b:x:1000:1::/:/bin/sh", PW_BAD, NULL},
        {"+::::::", PW_BAD, NULL},
        {"+@netgroup", PW_BAD, NULL},
        {"-baduser::::::", PW_BAD, NULL},
        {"averyveryveryveryveryveryveryveryveryveryveryveryveryverylongname12:x:1000:1::/:/bin/sh",
         PW_BAD, NULL},
    };
    static const char *const excl[] = {"guest", "guest2"};
    struct mapsrc_passwd_opts opts = {1000, excl, 2};

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct collect c;
        struct mapsrc_sink s = sink_for(&c);
        struct mapsrc_passwd_stats st;
        size_t fates[7] = {0};

        assert_int_equal(
            mapsrc_passwd_buf(rows[i].line, strlen(rows[i].line), "pw", &opts, &s, &st), 0);
        fates[PW_TAKEN] = st.accounts;
        fates[PW_UID] = st.skipped_uid;
        fates[PW_SYSTEM] = st.skipped_system;
        fates[PW_SHELL] = st.skipped_shell;
        fates[PW_EXCLUDED] = st.skipped_excluded;
        fates[PW_BAD] = st.bad_lines;
        for (int f = 0; f < 6; f++) {
            if (fates[f] != (rows[i].fate == (enum pw_fate)f ? 1u : 0u))
                fail_msg("row %zu '%s': fate %d count %zu", i, rows[i].line, f, fates[f]);
        }
        if (rows[i].fate == PW_TAKEN)
            assert_string_equal(c.names, rows[i].name);
        else
            assert_int_equal(c.nnames, 0);
        assert_int_equal(c.nbad, rows[i].fate == PW_BAD ? 1 : 0);
        if (rows[i].fate == PW_BAD)
            assert_string_equal(c.file, "pw");
    }
}

static void
test_passwd_min_uid_and_report_lines(void **state)
{
    const char *text = "root:x:0:0::/root:/bin/bash\n"
                       "garbage\n"
                       "\n"
                       "alice:x:500:500::/home/a:/bin/sh\n"
                       "bob:x:1000:1000::/home/b:/bin/sh\n"
                       "x@y:x:1000:1::/:/bin/sh\n";
    struct mapsrc_passwd_opts low = {500, NULL, 0}, dflt = {1000, NULL, 0};
    struct mapsrc_passwd_stats st;
    struct collect c;
    struct mapsrc_sink s = sink_for(&c);

    assert_int_equal(mapsrc_passwd_buf(text, strlen(text), "/etc/passwd", &low, &s, &st), 0);
    assert_string_equal(c.names, "alice,bob");
    assert_int_equal(st.skipped_uid, 1); /* root */
    assert_int_equal(st.bad_lines, 2);
    /* Line numbers count every physical line, blank ones included. */
    assert_non_null(strstr(c.bad, "2|expected 7 colon-separated fields"));
    assert_non_null(strstr(c.bad, "6|account 'x@y': local part contains a routing character"));

    s = sink_for(&c);
    assert_int_equal(mapsrc_passwd_buf(text, strlen(text), "p", &dflt, &s, &st), 0);
    assert_string_equal(c.names, "bob");
    assert_int_equal(st.skipped_uid, 2);
    /* NULL opts means the default uid floor, 1000. */
    s = sink_for(&c);
    assert_int_equal(mapsrc_passwd_buf(text, strlen(text), "p", NULL, &s, NULL), 0);
    assert_string_equal(c.names, "bob");
}

static void
test_system_and_shell_predicates(void **state)
{
    static const struct {
        const char *s;
        int sys;
    } names[] = {
        {"root", 1},
        {"bin", 1},
        {"daemon", 1},
        {"sys", 1},
        {"adm", 1},
        {"lp", 1},
        {"sync", 1},
        {"shutdown", 1},
        {"halt", 1},
        {"mail", 1},
        {"news", 1},
        {"uucp", 1},
        {"operator", 1},
        {"games", 1},
        {"man", 1},
        {"proxy", 1},
        {"www-data", 1},
        {"backup", 1},
        {"list", 1},
        {"irc", 1},
        {"gnats", 1},
        {"nobody", 1},
        {"systemd-timesync", 1},
        {"_apt", 1},
        {"messagebus", 1},
        {"sshd", 1},
        {"postfix", 1},
        {"ROOT", 1},
        {"alice", 0},
        {"rooted", 0},
        {"binary", 0},
        {"systemd", 0},
        {"mailman-user", 0},
        {"", 0},
    };
    static const struct {
        const char *s;
        int nologin;
    } shells[] = {
        {"/usr/sbin/nologin", 1}, {"/sbin/nologin", 1},    {"/bin/false", 1},
        {"/usr/bin/false", 1},    {"nologin", 1},          {"false", 1},
        {"/bin/bash", 0},         {"/bin/sh", 0},          {"", 0},
        {"/usr/bin/falsey", 0},   {"/nologin/bin/zsh", 0},
    };

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (mapsrc_is_system_account(names[i].s) != names[i].sys)
            fail_msg("system account '%s' should be %d", names[i].s, names[i].sys);
    for (size_t i = 0; i < sizeof(shells) / sizeof(shells[0]); i++)
        if (mapsrc_is_nologin_shell(shells[i].s) != shells[i].nologin)
            fail_msg("shell '%s' should be %d", shells[i].s, shells[i].nologin);
    assert_int_equal(mapsrc_is_system_account(NULL), 0);
    assert_int_equal(mapsrc_is_nologin_shell(NULL), 0);
}

/* --------------------------------------------------------------- aliases */

static void
test_aliases_table(void **state)
{
    static const struct {
        const char *text;
        const char *names; /* expected, comma-separated */
        const char *bad;   /* expected report line numbers, "2,5" */
    } rows[] = {
        {"postmaster: root\n", "postmaster", ""},
        {"MAILER-DAEMON: postmaster\nPostMaster: root\n", "mailer-daemon,postmaster", ""},
        {"# comment\n\n   \npostmaster: root\n", "postmaster", ""},
        {"  # indented comment\npostmaster: root\n", "postmaster", ""},
        /* continuation lines belong to the entry above; comments inside do
         * not end it */
        {"staff: alice,\n  bob,\n# note\n\tcarol\nnext: x\n", "staff,next", ""},
        {"staff:\n  alice\n", "staff", ""},
        {"  orphan\nok: x\n", "ok", "1"},
        {"list: :include:/etc/mail/list.members\n", "list", ""},
        {"pipe: \"|/usr/bin/procmail\"\nfile: /var/mail/archive\n", "pipe,file", ""},
        {"\"quoted\": alice\n", "quoted", ""},
        {"\"Quoted.Name\" : alice\n", "quoted.name", ""},
        {"\"with space\": alice\n", "", "1"},
        {"\"unterminated: alice\n", "", "1"},
        {"\"quoted\" alice\n", "", "1"},
        {"spaced : alice\n", "spaced", ""},
        {"empty:\n", "", "1"},
        {"empty2:   ,  \n", "", "1"},
        {"emptythen:\n# c\nnext: a\n", "next", "1"},
        {": alice\n", "", "1"},
        {"no colon here\n", "", "1"},
        {"a%b: alice\n", "", "1"},
        {"a!b: alice\n", "", "1"},
        {"user@example.jp: alice\n", "", "1"},
        {"a\x01z: alice\n", "", "1"},
        {"ok1: a\nbad line\nok2: b\n\"x y\": c\nok3: d\n", "ok1,ok2,ok3", "2,4"},
        {"crlf: a\r\n  b\r\n", "crlf", ""},
        {"noeol: a", "noeol", ""},
        {"", "", ""},
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct collect c;
        struct mapsrc_sink s = sink_for(&c);
        struct mapsrc_aliases_stats st;
        char lines[256] = "";

        assert_int_equal(
            mapsrc_aliases_buf(rows[i].text, strlen(rows[i].text), "/etc/aliases", &s, &st), 0);
        if (strcmp(c.names, rows[i].names) != 0)
            fail_msg("row %zu: names '%s', want '%s'", i, c.names, rows[i].names);
        /* Reduce "2|reason;4|reason;" to "2,4". */
        for (char *p = c.bad; *p != '\0';) {
            size_t l = strlen(lines);
            snprintf(lines + l, sizeof(lines) - l, "%s%lu", l ? "," : "", strtoul(p, NULL, 10));
            p = strchr(p, ';');
            if (p == NULL)
                break;
            p++;
        }
        if (strcmp(lines, rows[i].bad) != 0)
            fail_msg("row %zu: bad lines '%s', want '%s' (%s)", i, lines, rows[i].bad, c.bad);
        assert_int_equal(st.names, c.nnames);
        assert_int_equal(st.bad_lines, c.nbad);
    }
}

static void
test_aliases_reasons(void **state)
{
    const char *text = "empty:\nx%y: a\n";
    struct collect c;
    struct mapsrc_sink s = sink_for(&c);

    assert_int_equal(mapsrc_aliases_buf(text, strlen(text), "al", &s, NULL), 0);
    assert_non_null(strstr(c.bad, "1|alias 'empty' has an empty right-hand side;"));
    assert_non_null(strstr(c.bad, "2|alias 'x%y': local part contains a routing character"));
    assert_string_equal(c.file, "al");
}

/* ------------------------------------------------------------------ list */

static void
test_list_table(void **state)
{
    static const struct {
        const char *line;
        const char *name; /* NULL: bad; "": ignored */
        int kind;         /* 0 local, 1 address, 2 catch-all */
    } rows[] = {
        {"alice", "alice", 0},
        {"Alice@Example.JP", "alice@example.jp", 1},
        {"user-a@example.jp x", "user-a@example.jp", 1},
        {"user-b@example.jp\tOK", "user-b@example.jp", 1},
        {"   user-c@example.jp   extra columns here", "user-c@example.jp", 1},
        {"user@example.jp.", "user@example.jp", 1},
        {"@example.jp", "@example.jp", 2},
        {"@Example.JP OK", "@example.jp", 2},
        {"ml-name-request@example.jp x", "ml-name-request@example.jp", 1},
        {"first.last+tag@sub.example.jp", "first.last+tag@sub.example.jp", 1},
        {"\xe3\x83\xa6\xe3\x83\xbc\xe3\x82\xb6@example.jp",
         "\xe3\x83\xa6\xe3\x83\xbc\xe3\x82\xb6@example.jp", 1},
        {"", "", 0},
        {"# comment", "", 0},
        {"   # indented comment", "", 0},
        {"a%b@example.jp", NULL, 0},
        {"a!b@example.jp", NULL, 0},
        {"a@b@example.jp", NULL, 0},
        {"@a:b@example.jp", NULL, 0},
        {"a:b", NULL, 0},
        {"a%b", NULL, 0},
        {"user@", NULL, 0},
        {"user@[192.0.2.1]", NULL, 0},
        {"user@exa mple.jp", "user@exa", 1}, /* second column ignored */
        {"user@ex..jp", NULL, 0},
        {"user@.jp", NULL, 0},
        {"user@-bad/char.jp", NULL, 0},
        {"<user@example.jp>", NULL, 0},
        {"\"quoted\"@example.jp", NULL, 0},
        {"@", NULL, 0},
        {"tab\x7f@example.jp", NULL, 0},
        {"a123456789b123456789c123456789d123456789e123456789f123456789g12345@x.jp", NULL, 0},
    };

    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct collect c;
        struct mapsrc_sink s = sink_for(&c);
        struct mapsrc_list_stats st;

        assert_int_equal(mapsrc_list_buf(rows[i].line, strlen(rows[i].line), "l", &s, &st), 0);
        if (rows[i].name == NULL) {
            if (c.nbad != 1 || c.nnames != 0)
                fail_msg("row %zu '%s': expected a bad line, got names '%s'", i, rows[i].line,
                         c.names);
            assert_int_equal(st.bad_lines, 1);
            continue;
        }
        assert_int_equal(c.nbad, 0);
        if (strcmp(c.names, rows[i].name) != 0)
            fail_msg("row %zu: got '%s', want '%s'", i, c.names, rows[i].name);
        if (rows[i].name[0] != '\0') {
            size_t counts[3] = {st.locals, st.addresses, st.catchalls};
            assert_int_equal(counts[rows[i].kind], 1);
            assert_int_equal(st.locals + st.addresses + st.catchalls, 1);
        }
    }
}

static void
test_list_report_lines(void **state)
{
    const char *text = "a@x.jp\n\nb%c@x.jp\n# c\nd@x.jp\ne@@x.jp";
    struct collect c;
    struct mapsrc_sink s = sink_for(&c);
    struct mapsrc_list_stats st;

    assert_int_equal(mapsrc_list_buf(text, strlen(text), "users.txt", &s, &st), 0);
    assert_string_equal(c.names, "a@x.jp,d@x.jp");
    assert_int_equal(st.bad_lines, 2);
    assert_non_null(strstr(c.bad, "3|'b%c@x.jp': local part contains a routing character"));
    assert_non_null(strstr(c.bad, "6|"));
    assert_string_equal(c.file, "users.txt");
}

/* -------------------------------------------------------- input handling */

static void
test_file_matches_buffer(void **state)
{
    const char *pw = "alice:x:1000:1::/:/bin/sh\nroot:x:0:0::/:/bin/sh\nbad\n";
    const char *al = "a: b\n  c\nd:\n";
    const char *li = "x@y.jp z\n@y.jp\nq%r\n";
    struct collect cb, cf;
    struct mapsrc_sink sb, sf;
    FILE *f;

    sb = sink_for(&cb);
    sf = sink_for(&cf);
    assert_int_equal(mapsrc_passwd_buf(pw, strlen(pw), "f", NULL, &sb, NULL), 0);
    f = fmemopen((void *)pw, strlen(pw), "r");
    assert_non_null(f);
    assert_int_equal(mapsrc_passwd_file(f, "f", NULL, &sf, NULL), 0);
    fclose(f);
    assert_string_equal(cb.names, cf.names);
    assert_string_equal(cb.bad, cf.bad);

    sb = sink_for(&cb);
    sf = sink_for(&cf);
    assert_int_equal(mapsrc_aliases_buf(al, strlen(al), "f", &sb, NULL), 0);
    f = fmemopen((void *)al, strlen(al), "r");
    assert_int_equal(mapsrc_aliases_file(f, "f", &sf, NULL), 0);
    fclose(f);
    assert_string_equal(cb.names, "a");
    assert_string_equal(cb.names, cf.names);
    assert_string_equal(cb.bad, cf.bad);

    sb = sink_for(&cb);
    sf = sink_for(&cf);
    assert_int_equal(mapsrc_list_buf(li, strlen(li), "f", &sb, NULL), 0);
    f = fmemopen((void *)li, strlen(li), "r");
    assert_int_equal(mapsrc_list_file(f, "f", &sf, NULL), 0);
    fclose(f);
    assert_string_equal(cb.names, "x@y.jp,@y.jp");
    assert_string_equal(cb.names, cf.names);
    assert_string_equal(cb.bad, cf.bad);
}

static void
test_nul_bytes_and_long_lines(void **state)
{
    static const char nul[] = "ali\0ce:x:1000:1::/:/bin/sh\nbob:x:1000:1::/:/bin/sh\n";
    static const char nul_list[] = "a\0b@x.jp\nc@x.jp\n";
    static const char nul_al[] = "a\0: b\nc: d\n";
    struct collect c;
    struct mapsrc_sink s = sink_for(&c);
    char *big;
    size_t n = 1 << 20;

    assert_int_equal(mapsrc_passwd_buf(nul, sizeof(nul) - 1, "p", NULL, &s, NULL), 0);
    assert_string_equal(c.names, "bob");
    assert_int_equal(c.nbad, 1);
    s = sink_for(&c);
    assert_int_equal(mapsrc_list_buf(nul_list, sizeof(nul_list) - 1, "l", &s, NULL), 0);
    assert_string_equal(c.names, "c@x.jp");
    assert_int_equal(c.nbad, 1);
    s = sink_for(&c);
    assert_int_equal(mapsrc_aliases_buf(nul_al, sizeof(nul_al) - 1, "a", &s, NULL), 0);
    assert_string_equal(c.names, "c");
    assert_int_equal(c.nbad, 1);

    /* A 1 MiB line of 'a' is one bad line, not a crash; NULL sinks are fine. */
    big = malloc(n);
    assert_non_null(big);
    memset(big, 'a', n);
    s = sink_for(&c);
    assert_int_equal(mapsrc_list_buf(big, n, "l", &s, NULL), 0);
    assert_int_equal(c.nbad, 1);
    assert_int_equal(mapsrc_aliases_buf(big, n, "a", NULL, NULL), 0);
    assert_int_equal(mapsrc_passwd_buf(big, n, "p", NULL, NULL, NULL), 0);
    free(big);
    assert_int_equal(mapsrc_list_buf(NULL, 5, "l", NULL, NULL), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_passwd_lines),
        cmocka_unit_test(test_passwd_min_uid_and_report_lines),
        cmocka_unit_test(test_system_and_shell_predicates),
        cmocka_unit_test(test_aliases_table),
        cmocka_unit_test(test_aliases_reasons),
        cmocka_unit_test(test_list_table),
        cmocka_unit_test(test_list_report_lines),
        cmocka_unit_test(test_file_matches_buffer),
        cmocka_unit_test(test_nul_bytes_and_long_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
