/*
 * test_log.c - stderr lines: the format, and gathering (log_gather): lines
 * held until log_flush, an error written at once, a full buffer written
 * before it overflows, gathering by one thread only, exit() and log_abort()
 * writing what is held, a slow pipe with signals losing no line.
 * stderr is pointed at a temp file for each test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
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
    /* 2026-11-24T20:10:00.123Z tlog[123]: hello 42 (an info line has no level word) */
    assert_int_equal(strncmp(s + 24, " tlog[", 6), 0);
    assert_int_equal(atol(s + 30), (long)getpid());
    assert_int_equal(s[4], '-');
    assert_int_equal(s[19], '.');
    assert_int_equal(s[10], 'T');
    assert_int_equal(s[23], 'Z');
    assert_non_null(strstr(s, "]: hello 42\n"));
    assert_null(strstr(s, "info"));
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
    assert_true(strstr(s, "]: one\n") < strstr(s, "warning: two\n"));
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
    assert_non_null(strstr(s, "]: before\n"));
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
    assert_non_null(strstr(s, "]: held\n"));
    free(s);
    log_info("direct");
    s = written();
    assert_non_null(strstr(s, "]: direct\n"));
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
    assert_non_null(strstr(s, "]: from another thread\n"));
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
    assert_non_null(strstr(s, "]: last words\n"));
    free(s);
}

static void
test_abort_writes_what_is_held(void **state)
{
    pid_t pid;
    int st;
    char *s;

    (void)state;
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGABRT, SIG_DFL);
        log_gather(1);
        log_info("before the broken invariant");
        log_abort();
    }
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
    s = written();
    assert_non_null(strstr(s, "]: before the broken invariant\n"));
    free(s);
}

struct slow_reader {
    int fd;
    char *got;
    size_t len;
};

static void *
slow_reader_run(void *arg)
{
    struct slow_reader *r = arg;
    ssize_t n;

    while ((n = read(r->fd, r->got + r->len, 512)) > 0) {
        r->len += (size_t)n;
        usleep(2000);
    }
    return NULL;
}

static void
on_alarm(int sig)
{
    (void)sig;
}

static void
test_a_slow_pipe_and_signals_lose_no_line(void **state)
{
    /* stderr is a small pipe read slowly, and a signal (SA_RESTART, as
     * libuv installs its handlers) interrupts the blocked writes: a write
     * cut short must go on with the rest, or lines vanish. */
    int p[2], saved = dup(STDERR_FILENO);
    struct slow_reader r = {0};
    struct sigaction sa, old;
    struct itimerval it = {{0, 700}, {0, 700}}, off = {{0, 0}, {0, 0}};
    pthread_t t;
    char line[900];

    (void)state;
    assert_int_equal(pipe(p), 0);
    fcntl(p[1], F_SETPIPE_SZ, 4096);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    r.fd = p[0];
    r.got = calloc(1, 1 << 20);
    pthread_create(&t, NULL, slow_reader_run, &r);
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, &old);
    setitimer(ITIMER_REAL, &it, NULL);

    memset(line, 'y', sizeof(line) - 1);
    line[sizeof(line) - 1] = '\0';
    log_gather(1);
    for (int i = 0; i < 60; i++)
        log_info("%02d %s", i, line);
    log_gather(0);

    setitimer(ITIMER_REAL, &off, NULL);
    sigaction(SIGALRM, &old, NULL);
    dup2(saved, STDERR_FILENO); /* the pipe's last writer goes: EOF */
    close(saved);
    pthread_join(t, NULL);
    close(p[0]);
    assert_int_equal(count(r.got, "\n"), 60);
    for (int i = 0; i < 60; i++) {
        char want[8];
        snprintf(want, sizeof(want), ": %02d y", i);
        assert_non_null(strstr(r.got, want));
    }
    free(r.got);
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
        cmocka_unit_test_setup_teardown(test_abort_writes_what_is_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_slow_pipe_and_signals_lose_no_line, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
