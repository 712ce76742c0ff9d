/*
 * test_log.c - stderr lines: the format, and gathering (log_gather): lines
 * held until log_flush, an error written at once, a full buffer written
 * before it overflows, gathering per thread, exit() writing what is held.
 * stderr is pointed at a temp file for each test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "log.h"

static char out_path[] = "/tmp/mx2-test-log-XXXXXX";
static int saved_stderr = -1;

static int
setup(void **state)
{
    int fd;

    (void)state;
    strcpy(out_path, "/tmp/mx2-test-log-XXXXXX");
    fd = mkstemp(out_path);
    if (fd < 0)
        return -1;
    saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    log_open("tlog", LOG_TARGET_STDERR);
    log_set_level(LOG_LVL_INFO);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    log_gather(0);
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    unlink(out_path);
    return 0;
}

/* What the file holds now; the caller frees. */
static char *
written(void)
{
    FILE *f = fopen(out_path, "r");
    char *s = calloc(1, 1 << 20);
    size_t n;

    assert_non_null(f);
    n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = '\0';
    fclose(f);
    return s;
}

static size_t
count(const char *s, const char *what)
{
    size_t n = 0;

    for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what))
        n++;
    return n;
}

static void
test_line_format(void **state)
{
    char *s;

    (void)state;
    log_info("hello %d", 42);
    log_debug("not shown at info");
    s = written();
    /* 2026-11-24T20:10:00.123Z tlog[123]: info: hello 42 */
    assert_int_equal(strncmp(s + 24, " tlog[", 6), 0);
    assert_int_equal(atol(s + 30), (long)getpid());
    assert_int_equal(s[4], '-');
    assert_int_equal(s[19], '.');
    assert_int_equal(s[10], 'T');
    assert_int_equal(s[23], 'Z');
    assert_non_null(strstr(s, "]: info: hello 42\n"));
    assert_int_equal(count(s, "\n"), 1);
    assert_null(strstr(s, "not shown"));
    free(s);
}

static void
test_gathered_lines_wait_for_flush(void **state)
{
    char *s;

    (void)state;
    log_gather(1);
    log_info("one");
    log_warn("two");
    s = written();
    assert_string_equal(s, "");
    free(s);
    log_flush();
    s = written();
    assert_int_equal(count(s, "\n"), 2);
    assert_true(strstr(s, "info: one\n") < strstr(s, "warning: two\n"));
    free(s);
    /* Flushing again writes nothing twice. */
    log_flush();
    s = written();
    assert_int_equal(count(s, "\n"), 2);
    free(s);
}

static void
test_an_error_goes_at_once_with_what_came_before(void **state)
{
    char *s;

    (void)state;
    log_gather(1);
    log_info("before");
    log_err("broken");
    s = written();
    assert_non_null(strstr(s, "info: before\n"));
    assert_non_null(strstr(s, "error: broken\n"));
    free(s);
}

static void
test_gather_off_writes_what_is_held(void **state)
{
    char *s;

    (void)state;
    log_gather(1);
    log_info("held");
    log_gather(0);
    s = written();
    assert_non_null(strstr(s, "info: held\n"));
    free(s);
    log_info("direct");
    s = written();
    assert_non_null(strstr(s, "info: direct\n"));
    free(s);
}

static void
test_a_full_buffer_is_written_whole_lines_in_order(void **state)
{
    char *s;
    char line[600];

    (void)state;
    memset(line, 'x', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    log_gather(1);
    for (int i = 0; i < 100; i++) /* about 65 KiB: several buffers' worth */
        log_info("%03d %s", i, line);
    s = written();
    /* Some went already (the buffer filled), and only whole lines. */
    assert_true(count(s, "\n") > 0);
    assert_true(count(s, "\n") < 100);
    assert_int_equal(s[strlen(s) - 1], '\n');
    free(s);
    log_flush();
    s = written();
    assert_int_equal(count(s, "\n"), 100);
    for (int i = 1; i < 100; i++) {
        char a[8], b[8];
        snprintf(a, sizeof(a), ": %03d ", i - 1);
        snprintf(b, sizeof(b), ": %03d ", i);
        assert_true(strstr(s, a) < strstr(s, b));
    }
    free(s);
}

static void *
other_thread(void *arg)
{
    (void)arg;
    log_info("from another thread");
    return NULL;
}

static void
test_gathering_is_per_thread(void **state)
{
    pthread_t t;
    char *s;

    (void)state;
    log_gather(1);
    log_info("loop thread");
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    s = written();
    assert_non_null(strstr(s, "info: from another thread\n"));
    assert_null(strstr(s, "loop thread"));
    free(s);
}

static void
test_exit_writes_what_is_held(void **state)
{
    pid_t pid;
    int st;
    char *s;

    (void)state;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        log_gather(1);
        log_info("last words");
        exit(3);
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_int_equal(WEXITSTATUS(st), 3);
    s = written();
    assert_non_null(strstr(s, "info: last words\n"));
    free(s);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_line_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gathered_lines_wait_for_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_an_error_goes_at_once_with_what_came_before, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gather_off_writes_what_is_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_full_buffer_is_written_whole_lines_in_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gathering_is_per_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_writes_what_is_held, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
