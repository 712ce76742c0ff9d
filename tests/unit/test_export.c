/*
 * test_export.c - the mbox (mboxrd) and Maildir writers of `mx2ctl export`:
 * dot-stuffing undone, CRLF -> LF, From_ line, >From quoting (and that it
 * round-trips), added headers, appending, Maildir layout and unique names,
 * and failure on an unusable destination.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "envelope.h"
#include "err.h"
#include "export.h"

static struct envelope_rcpt test_rcpts[] = {
    {.address = "alice@example.jp", .state = ENVELOPE_RCPT_DEFERRED},
    {.address = "bob@example.jp", .state = ENVELOPE_RCPT_DONE},
    {.address = "carol@example.jp", .state = ENVELOPE_RCPT_PENDING},
};

static void
test_env(struct envelope *e, const char *sender)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->qid, sizeof(e->qid), "%s", "1J11ENHF37I00");
    e->arrival_sec = 1700000000;
    e->sender = (char *)sender;
    e->rcpts = test_rcpts;
    e->nrcpt = 3;
}

/* Stored form: CRLF, dot-stuffed. */
static const char stored[] = "Subject: hi\r\n"
                             "\r\n"
                             "From the start\r\n"
                             ">From quoted\r\n"
                             ">>From twice\r\n"
                             "Fromage\r\n"
                             " From indented\r\n"
                             "..leading dot\r\n"
                             "bare\rcr\r\n";

static const char expect_text[] = "Return-Path: <s@example.org>\n"
                                  "X-Original-To: alice@example.jp\n"
                                  "X-Original-To: carol@example.jp\n"
                                  "Subject: hi\n"
                                  "\n"
                                  ">From the start\n"
                                  ">>From quoted\n"
                                  ">>>From twice\n"
                                  "Fromage\n"
                                  " From indented\n"
                                  ".leading dot\n"
                                  "bare\rcr\n";

static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = calloc(1, (size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    if (len)
        *len = (size_t)n;
    return buf;
}

static void
test_message_text(void **state)
{
    struct envelope e;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    test_env(&e, "s@example.org");
    assert_int_equal(
        export_write_message(f, &e, (const unsigned char *)stored, sizeof(stored) - 1, 1), 0);
    fclose(f);
    assert_string_equal(out, expect_text);
    free(out);

    /* Without mboxrd (Maildir) nothing is quoted. */
    f = open_memstream(&out, &len);
    assert_int_equal(
        export_write_message(f, &e, (const unsigned char *)stored, sizeof(stored) - 1, 0), 0);
    fclose(f);
    assert_non_null(strstr(out, "\nFrom the start\n>From quoted\n>>From twice\n"));
    free(out);

    /* A body without a final line end still ends with LF; an empty body is
     * just the headers. */
    f = open_memstream(&out, &len);
    assert_int_equal(export_write_message(f, &e, (const unsigned char *)"a\r\nb", 4, 0), 0);
    fclose(f);
    assert_true(len >= 4 && strcmp(out + len - 4, "a\nb\n") == 0);
    free(out);
    f = open_memstream(&out, &len);
    assert_int_equal(export_write_message(f, &e, NULL, 0, 0), 0);
    fclose(f);
    assert_true(strncmp(out, "Return-Path: <s@example.org>\n", 29) == 0);
    free(out);
    assert_int_equal(export_write_message(NULL, &e, NULL, 0, 0), MX2_E_INVAL);
}

static void
test_all_done_recipients(void **state)
{
    struct envelope_rcpt r[] = {{.address = "x@example.jp", .state = ENVELOPE_RCPT_DONE}};
    struct envelope e;
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);

    test_env(&e, "");
    e.rcpts = r;
    e.nrcpt = 1;
    assert_int_equal(export_write_message(f, &e, (const unsigned char *)"x\r\n", 3, 1), 0);
    fclose(f);
    assert_string_equal(out, "Return-Path: <>\nX-Original-To: x@example.jp\nx\n");
    free(out);
}

static void
test_from_line(void **state)
{
    struct envelope e;
    char buf[256];
    int n;

    test_env(&e, "s@example.org");
    n = export_from_line(&e, buf, sizeof(buf));
    assert_true(n > 0);
    assert_true(strncmp(buf, "From s@example.org ", 19) == 0);
    assert_int_equal(buf[n - 1], '\n');
    /* ctime shape: "Www Mmm dd hh:mm:ss yyyy" */
    assert_int_equal(strlen(buf + 19), 25);
    test_env(&e, "");
    export_from_line(&e, buf, sizeof(buf));
    assert_true(strncmp(buf, "From MAILER-DAEMON ", 19) == 0);
    test_env(&e, "\"a b\"@example.org");
    export_from_line(&e, buf, sizeof(buf));
    assert_true(strncmp(buf, "From \"a_b\"@example.org ", 23) == 0);
    assert_int_equal(export_from_line(&e, buf, 10), MX2_E_INVAL);
}

static void
test_mbox_append_and_roundtrip(void **state)
{
    char dir[] = "/tmp/mx2-test-export-XXXXXX", path[128];
    struct export_mbox mb;
    struct envelope e;
    char *text, *p;
    size_t len;
    int froms = 0;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/mbox", dir);
    test_env(&e, "s@example.org");
    for (int round = 0; round < 2; round++) {
        assert_int_equal(export_mbox_open(path, &mb), 0);
        assert_int_equal(
            export_mbox_append(&mb, &e, (const unsigned char *)stored, sizeof(stored) - 1), 0);
        assert_int_equal(export_mbox_close(&mb), 0);
    }
    text = slurp(path, &len);
    /* Exactly two From_ lines: one per message, none from the body. */
    for (p = text; (p = strstr(p, "From ")) != NULL; p++)
        if (p == text || p[-1] == '\n')
            froms++;
    assert_int_equal(froms, 2);
    assert_true(strncmp(text, "From s@example.org ", 19) == 0);
    assert_non_null(strstr(text, "\n\nFrom s@example.org "));
    assert_true(len >= 2 && text[len - 1] == '\n' && text[len - 2] == '\n');
    /* Unquoting (remove one '>' from /^>+From /) gives the original back. */
    p = strstr(text, "\n>From the start\n");
    assert_non_null(p);
    assert_non_null(strstr(text, "\n>>>From twice\n"));
    assert_null(strstr(text, "\r\n"));
    free(text);
    unlink(path);
    /* A directory is not an mbox. */
    assert_true(export_mbox_open(dir, &mb) < 0);
    rmdir(dir);
}

static int
count_dir(const char *path, char *first, size_t size)
{
    DIR *d = opendir(path);
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n++ == 0 && first)
            snprintf(first, size, "%s", de->d_name);
    }
    closedir(d);
    return n;
}

static void
test_maildir(void **state)
{
    char dir[] = "/tmp/mx2-test-export-XXXXXX", md[128], sub[800], name[512], name2[512];
    struct envelope e;
    char *text;

    assert_non_null(mkdtemp(dir));
    snprintf(md, sizeof(md), "%s/Maildir", dir);
    assert_int_equal(export_maildir_init(md), 0);
    assert_int_equal(export_maildir_init(md), 0); /* again: fine */
    test_env(&e, "s@example.org");
    assert_int_equal(export_maildir_write(md, "host/a:b", 1700000001, &e,
                                          (const unsigned char *)stored, sizeof(stored) - 1, name,
                                          sizeof(name)),
                     0);
    assert_string_equal(name, "1700000001.1J11ENHF37I00.host\\057a\\072b");
    /* Same second, same message: a second, distinct file, never a clobber. */
    assert_int_equal(export_maildir_write(md, "host/a:b", 1700000001, &e,
                                          (const unsigned char *)stored, sizeof(stored) - 1, name2,
                                          sizeof(name2)),
                     0);
    assert_string_not_equal(name, name2);
    snprintf(sub, sizeof(sub), "%s/new", md);
    assert_int_equal(count_dir(sub, NULL, 0), 2);
    snprintf(sub, sizeof(sub), "%s/tmp", md);
    assert_int_equal(count_dir(sub, NULL, 0), 0);
    snprintf(sub, sizeof(sub), "%s/cur", md);
    assert_int_equal(count_dir(sub, NULL, 0), 0);
    snprintf(sub, sizeof(sub), "%s/new/%s", md, name);
    text = slurp(sub, NULL);
    /* Maildir: no From_ line, no quoting. */
    assert_true(strncmp(text, "Return-Path: <s@example.org>\n", 29) == 0);
    assert_non_null(strstr(text, "\nFrom the start\n"));
    free(text);
    unlink(sub);
    snprintf(sub, sizeof(sub), "%s/new/%s", md, name2);
    unlink(sub);

    /* A Maildir path under a regular file cannot be made. */
    snprintf(sub, sizeof(sub), "%s/file", dir);
    fclose(fopen(sub, "w"));
    snprintf(md, sizeof(md), "%s/file/Maildir", dir);
    assert_true(export_maildir_init(md) < 0);
    unlink(sub);
    snprintf(sub, sizeof(sub), "rm -rf %s", dir);
    assert_int_equal(system(sub), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_message_text), cmocka_unit_test(test_all_done_recipients),
        cmocka_unit_test(test_from_line),    cmocka_unit_test(test_mbox_append_and_roundtrip),
        cmocka_unit_test(test_maildir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
